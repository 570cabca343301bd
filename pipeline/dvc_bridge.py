"""What the Prefect flows know of DVC: the stage graph from dvc.yaml and how to run a stage.

Nothing here repeats the DAG: stages, their order and their upstreams come from DVC's own
index of ``dvc.yaml``. A project's stages are the foreach entries named after it:
``download@<project>`` and ``train@<project>-<framework>``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import networkx as nx
from dvc.repo import Repo

SKIPPED_MARKER = "didn't change, skipping"


@dataclass(frozen=True)
class StageNode:
    name: str            # the stage name in dvc.yaml, e.g. "train@image_classification-keras"
    kind: str            # the stage definition, e.g. "train"
    upstream: tuple[str, ...]


def project_of(stage_name: str) -> str | None:
    """The project a foreach stage belongs to, from its key (``kind@project[-variant]``)."""
    _, at, key = stage_name.partition("@")
    return key.split("-", 1)[0] if at else None


def project_names(repo_root: Path) -> list[str]:
    with Repo(str(repo_root)) as repo:
        return sorted({p for stage in repo.index.stages if (p := project_of(stage.name))})


def project_stages(repo_root: Path, project: str) -> list[StageNode]:
    """The project's stages in an order DVC would run them, each with its upstream stages."""
    with Repo(str(repo_root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        nodes = [stage for stage in graph.nodes if project_of(stage.name) == project]
        if not nodes:
            known = sorted({p for s in graph.nodes if (p := project_of(s.name))})
            raise KeyError(f"dvc.yaml has no stages for project {project!r}; it has {', '.join(known)}")
        subgraph = graph.subgraph(nodes)
        # Dependencies first; ties broken by name, so each variant's stages come out together.
        order = nx.lexicographical_topological_sort(subgraph.reverse(copy=False), key=lambda s: s.name)
        return [
            StageNode(
                name=stage.name,
                kind=stage.name.split("@")[0],
                upstream=tuple(sorted(dep.name for dep in subgraph.successors(stage))),
            )
            for stage in order
        ]


def repro_stage(repo_root: Path, stage_name: str, log: Callable[[str], Any] = print) -> bool:
    """``dvc repro --single-item`` one stage, streaming its output to ``log``.

    DVC decides whether the stage reruns (changed deps or params) or is skipped.
    Returns True if the stage ran, False if DVC found it up to date.
    """
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(bin_dir / "dvc"), "--wait-for-lock", "repro", "--single-item", stage_name]
    process = subprocess.Popen(
        command, cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    skipped = False
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip()
        skipped = skipped or SKIPPED_MARKER in line
        if line:
            log(line)
    if process.wait() != 0:
        raise RuntimeError(f"dvc repro {stage_name} failed with exit code {process.returncode}")
    return not skipped


def project_metrics(repo_root: Path, project: str) -> dict[str, dict[str, Any]]:
    """The metrics files the project's stages declare in dvc.yaml, read from the workspace."""
    with Repo(str(repo_root)) as repo:
        paths = sorted(
            out.def_path for stage in repo.index.stages if project_of(stage.name) == project for out in stage.metrics
        )
    return {path: json.loads((repo_root / path).read_text()) for path in paths if (repo_root / path).exists()}
