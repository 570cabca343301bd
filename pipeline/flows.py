"""The Prefect flow that runs any project's DVC pipeline, one task per DVC stage."""
from __future__ import annotations

import atexit
import fcntl
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import TaskRun
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from curriculum.results import ResultsTable, caption, render_markdown, result_records
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
def dvc_stage(repo_root: str, stage_name: str, changed: bool = True,
              upstream: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Run one DVC stage through ``dvc repro --single-item``; DVC's cache decides if it reruns.

    ``changed`` is what DVC said of the stage at the start of the run (``check_before_stages``)
    and ``upstream`` the results of the stages it depends on. A stage found up to date is not
    asked again while none of them ran: nothing this run wrote can have changed its inputs.
    """
    logger = get_run_logger()
    if not changed and not any(result["ran"] for result in upstream):
        logger.info("%s was up to date (DVC status at the start of the run; no upstream stage ran)", stage_name)
        return {"stage": stage_name, "ran": False}
    ran = dvc_bridge.repro_stage(Path(repo_root), stage_name, log=logger.info)
    logger.info("%s %s", stage_name, "ran" if ran else "was up to date (DVC cache)")
    return {"stage": stage_name, "ran": ran}


def publish_results(project: str, stage_results: list[dict[str, Any]], repo_root: Path) -> ResultsTable:
    """The run's results as Prefect artifacts: the project's results table (a row per variant and
    baseline, as at the end of ``make run``) as a table artifact, and with the stages' status as markdown."""
    from pipeline.summary import project_tables

    table, = project_tables(repo_root, [project])
    key = project.replace("_", "-")
    create_table_artifact(key=f"{key}-results", table=result_records(table), description=caption(table))
    stage_lines = "\n".join(f"| {r['stage']} | {'ran' if r['ran'] else 'up to date'} |" for r in stage_results)
    create_markdown_artifact(
        key=f"{key}-summary",
        markdown=(f"# {project}\n\n**{caption(table)}**\n\n{render_markdown(table)}\n\n"
                  f"| stage | status |\n|---|---|\n{stage_lines}\n"),
        description=f"{project}: results and stages run",
    )
    return table


@task
def check_before_stages(repo_root: str, project: str) -> dvc_bridge.ProjectStatus:
    """What a run checks before any stage touches an output: the project's params (a bad key
    stops the run while the previous results are intact), the DVC cache (bad objects are
    quarantined and repaired, so a stage never builds on rotten bytes) and which stages DVC
    would rerun (up-to-date ones then need no ``dvc`` process of their own)."""
    from pipeline.cache_check import verify_cache
    from pipeline.params_check import check_params

    root = Path(repo_root)
    check_params(root / "params.yaml", [project])
    logger = get_run_logger()
    with dvc_bridge.locked_repo(root) as repo:  # one lock and one read of dvc.yaml/dvc.lock for both
        report = verify_cache(root, dry_run=True, log=logger.info, repo=repo)
        status = dvc_bridge.project_status(repo, project)
    if report.problems:  # quarantine and repair (its `dvc` commands need the lock), then ask DVC again
        report = verify_cache(root, repair=True, log=logger.info)
        with dvc_bridge.locked_repo(root) as repo:
            status = dvc_bridge.project_status(repo, project)
    logger.info("%s", report.summary())
    if not report.clean:
        raise RuntimeError(f"the DVC cache has bad objects that could not be repaired:\n{report.summary()}")
    logger.info("DVC would rerun %d of %d stages: %s", len(status.changed), len(status.stages),
                ", ".join(node.name for node in status.stages if node.name in status.changed) or "none")
    return status


@task(retries=2, retry_delay_seconds=10)
def share_through_remote(repo_root: str, stage_names: list[str], direction: str, remote: str) -> None:
    """``dvc pull`` before the stages (what another machine already built at this commit is
    fetched, not rebuilt) or ``dvc push`` after them (so the others can), with the project's
    stages as targets and the run cache. Retried: a remote is a network away."""
    dvc_bridge.transfer(Path(repo_root), direction, remote, stage_names, log=get_run_logger().info)


@flow(name="dvc-project", log_prints=True, task_runner=task_runner(DEFAULT_WORKERS))
def project_flow(project: str, repo_root: str = str(REPO_ROOT), remote: str | None = None) -> list[dict[str, Any]]:
    """Run a project's DVC pipeline: every stage a task, submitted in DVC's order and
    waiting on its upstream stages, so independent stages may run side by side (with more
    than DEFAULT_WORKERS workers). A failed stage fails the flow with its own last lines.

    With ``remote`` (a DVC remote's name, e.g. ``shared``), the run first pulls what that remote
    holds of the project and, once every stage succeeded, pushes its outputs there: workers on
    several machines, each with its own clone, then share one cache.
    """
    if remote:  # the stage names from dvc.yaml alone: the check reads DVC's status after the pull
        stage_names = [node.name for node in dvc_bridge.project_stages(Path(repo_root), project)]
        share_through_remote.with_options(name="dvc-pull")(repo_root, stage_names, "pull", remote)
    status = check_before_stages(repo_root, project)
    futures: dict[str, PrefectFuture] = {}
    for node in status.stages:
        stage_task = dvc_stage.with_options(name=node.name, **stage_options(node.kind))
        futures[node.name] = stage_task.submit(
            repo_root, node.name, changed=node.name in status.changed,
            upstream=[futures[name] for name in node.upstream],
        )
    stage_results = [future.result() for future in futures.values()]
    if remote:
        share_through_remote.with_options(name="dvc-push")(repo_root, list(futures), "push", remote)
    publish_results(project, stage_results, Path(repo_root))
    return stage_results


# How long a CLI run waits for its ephemeral Prefect API server (Prefect's default, 20 s, is less
# than a cold start takes on a busy two-core machine). PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
# in the environment still wins.
EPHEMERAL_STARTUP_TIMEOUT_S = 120


def api_server_command(port: int) -> tuple[list[str], dict[str, str]]:
    """The command and environment Prefect's ``SubprocessASGIServer._run_uvicorn_command`` starts
    its ephemeral server with (tests hold the two equal)."""
    import prefect
    from prefect.settings import get_current_settings

    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
               "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "error", "--lifespan", "on"]
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
           **get_current_settings().to_environment_variables(exclude_unset=True)}
    return command, env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_api(api_url: str, process: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the ephemeral Prefect API server exited with code {process.returncode}")
            try:
                if client.get(f"{api_url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"Timed out while attempting to connect to ephemeral Prefect API server ({timeout} s)")


def _stop_api_server(process: subprocess.Popen, api_url: str) -> None:
    """As Prefect stops its ephemeral server at exit."""
    from prefect.logging import get_logger

    get_logger().info("Stopping temporary server on %s", api_url.removesuffix("/api"))
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_ephemeral_api() -> None:
    """Start this process's ephemeral Prefect API server now, unless a server is configured.

    Without PREFECT_API_URL each process (``python -m pipeline run``/``serve``) starts its own
    server over the one SQLite database in PREFECT_HOME, migrating it on a first start. Two
    processes starting together raced on those migrations and, under load, both overran
    Prefect's 20 s start-up limit. Here start-ups take turns (a file lock in PREFECT_HOME; the
    servers then run side by side) and each may take EPHEMERAL_STARTUP_TIMEOUT_S.

    The server is the one Prefect would start (:func:`api_server_command`), stopped at exit as
    Prefect stops it; this process then uses it as a configured server (PREFECT_API_URL), so it
    never imports Prefect's server code (1.5 s), and processes it starts use the same server.
    """
    from prefect.context import refresh_global_settings_context
    from prefect.logging import get_logger
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    timeout = int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_TIMEOUT_S))
    home = Path(PREFECT_HOME.value()).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "ephemeral-server-start.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released on close, or when this process dies
        port = _free_port()
        api_url = f"http://127.0.0.1:{port}/api"
        get_logger().info("Starting temporary server on http://127.0.0.1:%d", port)  # as Prefect words it
        command, env = api_server_command(port)
        process = subprocess.Popen(command, env=env)
        atexit.register(_stop_api_server, process, api_url)
        _wait_for_api(api_url, process, timeout)
    os.environ["PREFECT_API_URL"] = api_url
    refresh_global_settings_context()
