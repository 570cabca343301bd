"""What the Prefect flows know of DVC: the stage graph from dvc.yaml and how to run a stage.

Nothing here repeats the DAG: stages, their order and their upstreams come from DVC's own
index of ``dvc.yaml``. A project's stages are the foreach entries named after it:
``download@<project>`` and ``train@<project>-<framework>``.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import networkx as nx
from dvc.repo import Repo, lock_repo

if TYPE_CHECKING:
    from dvc.stage import Stage

SKIPPED_MARKER = "didn't change, skipping"

# A stage command exits with sysexits' EX_TEMPFAIL (75) for a failure worth retrying (the
# download stage does, for network trouble; see curriculum/download.py). `dvc repro` itself
# then exits 255 whatever the command's status was, but its last line names that status:
#   ERROR: failed to reproduce 'download@x': failed to run: python -m stages.download ..., exited with 75
TRANSIENT_EXIT_CODE = 75
_COMMAND_EXIT = re.compile(r"failed to reproduce '(?P<stage>[^']+)':.*?exited with (?P<code>-?\d+)", re.DOTALL)
# How many of the stage's last output lines its failure carries (the cause is among them).
TAIL_LINES = 20


class StageFailed(RuntimeError):
    """``dvc repro`` of one stage failed; the message holds the stage's last output lines.

    ``exit_code`` is dvc's own status (255 for any failed command); ``command_exit_code`` the
    stage command's status as dvc reported it (None if dvc failed before or without running
    it). ``transient`` is True when the command exited with TRANSIENT_EXIT_CODE.
    """

    def __init__(self, stage: str, exit_code: int, command_exit_code: int | None, tail: tuple[str, ...]):
        self.stage, self.exit_code, self.command_exit_code, self.tail = stage, exit_code, command_exit_code, tail
        self.transient = command_exit_code == TRANSIENT_EXIT_CODE
        status = f"dvc repro {stage} failed with exit code {exit_code}"
        if command_exit_code is not None:
            status += f"; its command exited with {command_exit_code}"
            status += " (EX_TEMPFAIL: a transient failure)" if self.transient else ""
        lines = "\n".join(f"  | {line}" for line in tail) or "  (no output)"
        super().__init__(f"{status}. Last {len(tail)} lines of its output:\n{lines}")

    def __reduce__(self):  # picklable with its fields, e.g. into a Prefect result
        return type(self), (self.stage, self.exit_code, self.command_exit_code, self.tail)


def command_exit_code(output_lines: Iterable[str], stage_name: str) -> int | None:
    """The stage command's exit status, from dvc's "failed to reproduce ... exited with N" line."""
    codes = [int(m["code"]) for m in _COMMAND_EXIT.finditer("\n".join(output_lines)) if m["stage"] == stage_name]
    return codes[-1] if codes else None


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


@contextmanager
def locked_repo(repo_root: Path) -> Iterator[Repo]:
    """DVC's repository with its lock held, waited for as the stages' ``dvc --wait-for-lock`` do.

    Everything read through it sees one state, parsed once: DVC drops its index of ``dvc.yaml``
    and ``dvc.lock`` each time it takes the lock.
    """
    with Repo(str(repo_root), _wait_for_lock=True) as repo, lock_repo(repo):
        yield repo


def _project_graph(repo: Repo, project: str) -> list[tuple[Stage, StageNode]]:
    """The project's DVC stages with their nodes, in an order DVC would run them."""
    graph = repo.index.graph  # edges point from a stage to the stages it depends on
    stages = [stage for stage in graph.nodes if project_of(stage.name) == project]
    if not stages:
        known = sorted({p for s in graph.nodes if (p := project_of(s.name))})
        raise KeyError(f"dvc.yaml has no stages for project {project!r}; it has {', '.join(known)}")
    subgraph = graph.subgraph(stages)
    # Dependencies first; ties broken by name, so each variant's stages come out together.
    order = nx.lexicographical_topological_sort(subgraph.reverse(copy=False), key=lambda s: s.name)
    return [
        (stage, StageNode(name=stage.name, kind=stage.name.split("@")[0],
                          upstream=tuple(sorted(dep.name for dep in subgraph.successors(stage)))))
        for stage in order
    ]


def project_stages(repo_root: Path, project: str) -> list[StageNode]:
    """The project's stages in an order DVC would run them, each with its upstream stages."""
    with Repo(str(repo_root)) as repo:
        return [node for _, node in _project_graph(repo, project)]


@dataclass(frozen=True)
class ProjectStatus:
    stages: tuple[StageNode, ...]  # as project_stages
    changed: frozenset[str]        # the stages `dvc repro --single-item` would not skip now


def project_status(repo: Repo, project: str) -> ProjectStatus:
    """The project's stages and which of them DVC would rerun, asked once in this process.

    ``Stage.changed()`` (its command, deps, params or outputs) is the very check ``dvc repro
    --single-item`` makes before it logs "didn't change, skipping", so an up-to-date stage need
    not start a ``dvc`` process to hear it. ``repo`` holds its lock (:func:`locked_repo`), as
    ``dvc status`` and ``dvc repro`` do while they ask.
    """
    graph = _project_graph(repo, project)
    return ProjectStatus(stages=tuple(node for _, node in graph),
                         changed=frozenset(node.name for stage, node in graph if stage.changed()))


def venv_dvc(*args: str) -> tuple[list[str], dict[str, str]]:
    """This venv's ``dvc`` with ``args``, and an environment whose PATH finds this venv's
    ``python`` first (stage commands call ``python -m stages...``)."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return [str(bin_dir / "dvc"), *args], env


def _run_dvc(repo_root: Path, args: list[str], log: Callable[[str], Any]) -> tuple[int, tuple[str, ...], bool]:
    """Run the venv's ``dvc`` with ``args`` in ``repo_root``, streaming its output to ``log``.
    Returns its exit status, its last TAIL_LINES lines and whether it said a stage was skipped."""
    command, env = venv_dvc(*args)
    process = subprocess.Popen(
        command, cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    skipped = False
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip()
        skipped = skipped or SKIPPED_MARKER in line
        if line:
            log(line)
            tail.append(line)
    return process.wait(), tuple(tail), skipped


def repro_stage(repo_root: Path, stage_name: str, log: Callable[[str], Any] = print) -> bool:
    """``dvc repro --single-item`` one stage, streaming its output to ``log``.

    DVC decides whether the stage reruns (changed deps or params) or is skipped.
    Returns True if the stage ran, False if DVC found it up to date. On failure raises
    :class:`StageFailed` with the last TAIL_LINES lines of output (the cause is among them)
    and whether the failure is transient.
    """
    status, tail, skipped = _run_dvc(repo_root, ["--wait-for-lock", "repro", "--single-item", stage_name], log)
    if status != 0:
        raise StageFailed(stage_name, status, command_exit_code(tail, stage_name), tail)
    return not skipped


class TransferFailed(RuntimeError):
    """``dvc push`` or ``dvc pull`` failed; the message holds its last output lines."""


def transfer(repo_root: Path, direction: str, remote: str, stage_names: Iterable[str],
             log: Callable[[str], Any] = print) -> None:
    """``dvc push`` or ``dvc pull`` the outputs of these stages, and the run cache, with ``remote``.

    Pulling allows outputs the remote does not hold (``--allow-missing``): a stage nobody has run at
    this commit is then simply run. The run cache travels too, so a stage whose params were run
    elsewhere before is restored by ``dvc repro`` rather than recomputed.
    """
    if direction not in ("push", "pull"):
        raise ValueError(f"direction must be push or pull, not {direction!r}")
    extra = ["--allow-missing"] if direction == "pull" else []
    status, tail, _ = _run_dvc(repo_root, ["--wait-for-lock", direction, "--run-cache", "--remote", remote,
                                           *extra, *stage_names], log)
    if status != 0:
        lines = "\n".join(f"  | {line}" for line in tail) or "  (no output)"
        raise TransferFailed(f"dvc {direction} --remote {remote} failed with exit code {status}. "
                             f"Last {len(tail)} lines of its output:\n{lines}")
