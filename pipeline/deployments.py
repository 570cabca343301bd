"""Scheduled deployments, declared once in ``prefect.yaml`` and served from here or deployed
to a work pool with ``prefect deploy``.

A deployment's run loads ``project_flow`` from its entrypoint and so uses the flow's own task
runner: ``flows.task_runner(DEFAULT_WORKERS)``, the same as ``python -m pipeline run`` without
``--workers``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from pipeline import WORK_POOL
from pipeline.dvc_bridge import venv_dvc
from pipeline.flows import project_flow

# prefect.yaml's pull step enters the clone this names: set by `python -m pipeline worker`.
CLONE_VARIABLE = "DL_CURRICULUM_ROOT"


def deployment_specs(repo_root: Path) -> list[dict[str, Any]]:
    return yaml.safe_load((repo_root / "prefect.yaml").read_text())["deployments"]


def build_deployments(repo_root: Path) -> list[RunnerDeployment]:
    """The ``prefect.yaml`` deployments as runner deployments of ``project_flow``, run in ``repo_root``."""
    return [
        project_flow.to_deployment(
            name=spec["name"],
            description=spec.get("description"),
            parameters={**spec.get("parameters", {}), "repo_root": str(repo_root)},
            schedules=[Cron(s["cron"], timezone=s.get("timezone", "UTC")) for s in spec.get("schedules", [])],
        )
        for spec in deployment_specs(repo_root)
    ]


def serve_deployments(repo_root: Path) -> None:
    """Register the deployments and run their scheduled flow runs until interrupted."""
    serve(*build_deployments(repo_root))


def worker_command(repo_root: Path, options: list[str]) -> tuple[list[str], dict[str, str]]:
    """``prefect worker start`` on the deployments' process work pool (created if missing), with
    ``options`` passed on (``--name``, ``--limit``...), in an environment whose CLONE_VARIABLE makes
    every flow run this worker takes run in ``repo_root``: each machine's worker in its own clone."""
    prefect = Path(sys.executable).parent / "prefect"
    command = [str(prefect), "worker", "start", "--pool", WORK_POOL, "--type", "process", *options]
    _, env = venv_dvc()  # stage commands call this venv's dvc and python
    return command, {**env, CLONE_VARIABLE: str(repo_root.resolve())}
