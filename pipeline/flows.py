"""The Prefect flow that runs any project's DVC pipeline, one task per DVC stage."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import TaskRun
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from pipeline import dvc_bridge

REPO_ROOT = Path(__file__).resolve().parent.parent

# Stages run one at a time unless asked otherwise (`python -m pipeline run --workers N`). The one
# default for the CLI and for the deployments (whose runs use the flow's own task runner): DVC
# holds one lock per repository while it reproduces a stage, so side-by-side stages would mostly
# wait on it (`--wait-for-lock`) while each holding a thread, and an unbounded pool (Prefect's
# default) only makes their logs interleave.
DEFAULT_WORKERS = 1

# Only fetching from the network fails transiently, and only a transient failure is retried: the
# stage command exits EX_TEMPFAIL (75) for it (dvc_bridge.StageFailed.transient). A 404, an
# unresolvable host or a checksum mismatch fails at once; so does any other stage's failure.
RETRIED_KINDS = frozenset({"download"})
RETRIES = 3
RETRY_BACKOFF_SECONDS = 10.0  # delays 10, 20, 40 s


def task_runner(workers: int = DEFAULT_WORKERS) -> ThreadPoolTaskRunner:
    """The task runner every run of ``project_flow`` uses: at most ``workers`` stages at once."""
    return ThreadPoolTaskRunner(max_workers=workers)


def retry_if_transient(task: Task, task_run: TaskRun, state: State) -> bool:
    """Prefect ``retry_condition_fn``: retry a stage only if its command said "try again later"."""
    try:
        state.result()
    except dvc_bridge.StageFailed as failure:
        return failure.transient
    except Exception:  # anything else (a bug in the bridge, a cancelled run) is not a network blip
        return False
    return False


def stage_options(kind: str) -> dict[str, Any]:
    """Task options for a stage of this kind (``dvc_stage.with_options``): retries or none."""
    if kind not in RETRIED_KINDS:
        return {}
    return {
        "retries": RETRIES,
        "retry_delay_seconds": exponential_backoff(backoff_factor=RETRY_BACKOFF_SECONDS),
        "retry_condition_fn": retry_if_transient,
    }


@task(log_prints=True)
def dvc_stage(repo_root: str, stage_name: str) -> dict[str, Any]:
    """Run one DVC stage through ``dvc repro --single-item``; DVC's cache decides if it reruns."""
    logger = get_run_logger()
    ran = dvc_bridge.repro_stage(Path(repo_root), stage_name, log=logger.info)
    logger.info("%s %s", stage_name, "ran" if ran else "was up to date (DVC cache)")
    return {"stage": stage_name, "ran": ran}


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# Nested detail (per-class scores, per-table validation counts) stays in the files themselves.
DETAIL_PREFIXES = ("per_class.", "tables.", "statistics.")


def metrics_rows(metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (metrics file, headline metric)."""
    rows = []
    for path, content in metrics.items():
        for name, value in _flatten(content).items():
            if isinstance(value, (int, float)) and not name.startswith(DETAIL_PREFIXES):
                rows.append({"file": path, "metric": name, "value": float(f"{value:.6g}")})
    return rows


def publish_metrics(project: str, stage_results: list[dict[str, Any]], repo_root: Path) -> list[dict[str, Any]]:
    """Publish the run's metrics as a Prefect table artifact and a markdown summary."""
    rows = metrics_rows(dvc_bridge.project_metrics(repo_root, project))
    key = project.replace("_", "-")
    create_table_artifact(key=f"{key}-metrics", table=rows, description=f"{project}: metrics after this run")
    stage_lines = "\n".join(f"| {r['stage']} | {'ran' if r['ran'] else 'up to date'} |" for r in stage_results)
    metric_lines = "\n".join(f"| {r['file']} | {r['metric']} | {r['value']} |" for r in rows)
    create_markdown_artifact(
        key=f"{key}-summary",
        markdown=(
            f"# {project}\n\n| stage | status |\n|---|---|\n{stage_lines}\n\n"
            f"| file | metric | value |\n|---|---|---|\n{metric_lines}\n"
        ),
        description=f"{project}: stages run and metrics",
    )
    return rows


@task
def check_before_stages(repo_root: str, project: str) -> dict[str, Any]:
    """What a run checks before any stage touches an output: the project's params (a bad key
    stops the run while the previous results are intact) and the DVC cache (bad objects are
    quarantined and repaired, so a stage never builds on rotten bytes)."""
    from pipeline.cache_check import verify_cache
    from pipeline.params_check import check_params

    root = Path(repo_root)
    check_params(root / "params.yaml", [project])
    logger = get_run_logger()
    report = verify_cache(root, repair=True, log=logger.info)
    logger.info("%s", report.summary())
    if not report.clean:
        raise RuntimeError(f"the DVC cache has bad objects that could not be repaired:\n{report.summary()}")
    return {"cache_bad_objects": len(report.problems), "cache_repaired": report.to_dict()["repaired"]}


@flow(name="dvc-project", log_prints=True, task_runner=task_runner(DEFAULT_WORKERS))
def project_flow(project: str, repo_root: str = str(REPO_ROOT)) -> list[dict[str, Any]]:
    """Run a project's DVC pipeline: every stage a task, submitted in DVC's order and
    waiting on its upstream stages, so independent stages may run side by side (with more
    than DEFAULT_WORKERS workers). A failed stage fails the flow with its own last lines."""
    root = Path(repo_root)
    check_before_stages(repo_root, project)
    futures: dict[str, PrefectFuture] = {}
    for node in dvc_bridge.project_stages(root, project):
        stage_task = dvc_stage.with_options(name=node.name, **stage_options(node.kind))
        futures[node.name] = stage_task.submit(
            repo_root, node.name, wait_for=[futures[name] for name in node.upstream]
        )
    stage_results = [future.result() for future in futures.values()]
    publish_metrics(project, stage_results, root)
    return stage_results


# How long a CLI run waits for its ephemeral Prefect API server (Prefect's default, 20 s, is less
# than a cold start takes on a busy two-core machine). PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
# in the environment still wins.
EPHEMERAL_STARTUP_TIMEOUT_S = 120


def start_ephemeral_api() -> None:
    """Start this process's ephemeral Prefect API server now, unless a server is configured.

    Without PREFECT_API_URL each process (``python -m pipeline run``/``serve``) starts its own
    server over the one SQLite database in PREFECT_HOME, migrating it on a first start. Two
    processes starting together raced on those migrations and, under load, both overran
    Prefect's 20 s start-up limit. Here start-ups take turns (a file lock in PREFECT_HOME; the
    servers then run side by side) and each may take EPHEMERAL_STARTUP_TIMEOUT_S. The flow's
    client later finds this process's server already running.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    timeout = int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_TIMEOUT_S))
    home = Path(PREFECT_HOME.value()).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "ephemeral-server-start.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released on close, or when this process dies
        SubprocessASGIServer().start(timeout=timeout)
