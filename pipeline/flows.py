"""The Prefect flow that runs any project's DVC pipeline, one task per DVC stage."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.tasks import exponential_backoff

from pipeline import dvc_bridge

REPO_ROOT = Path(__file__).resolve().parent.parent

# Only fetching from the network fails transiently; a failed training run would fail again.
RETRIES = {"download": {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=10)}}


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


@flow(name="dvc-project", log_prints=True)
def project_flow(project: str, repo_root: str = str(REPO_ROOT)) -> list[dict[str, Any]]:
    """Run a project's DVC pipeline: every stage a task, submitted in DVC's order and
    waiting on its upstream stages, so independent stages may run side by side."""
    root = Path(repo_root)
    futures: dict[str, PrefectFuture] = {}
    for node in dvc_bridge.project_stages(root, project):
        stage_task = dvc_stage.with_options(name=node.name, **RETRIES.get(node.kind, {}))
        futures[node.name] = stage_task.submit(
            repo_root, node.name, wait_for=[futures[name] for name in node.upstream]
        )
    stage_results = [future.result() for future in futures.values()]
    publish_metrics(project, stage_results, root)
    return stage_results
