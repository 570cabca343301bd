"""How much of each stage's wall time is start-up (interpreter + imports) rather than its work.

Runs every stage command of the chosen projects (train stages only with ``--train``) in a scratch
copy of the workspace, with ``python -X importtime``: the start-up is the interpreter's own start
plus every import the process did, at module level or later (TensorFlow loaded inside ``main``
counts too); the work is the rest of the wall time. ``--against REV`` runs the same commands
with the code of another commit (a git worktree over the same data) side by side, so the two
columns share the machine's load::

    python bench/stage_startup.py --project simple_nn --against HEAD~3 --repeat 3

Needs a built workspace (``dvc repro``): the stages read the data and models already there.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What a stage command reads besides the code: the workspace's data and results (copied, so the
# benchmark never rewrites the real workspace's files).
WORKSPACE_DIRS = ("data", "reports")
WORKSPACE_FILES = ("params.yaml", "dvc.yaml")
_TOP_LEVEL_IMPORT = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| (\S.*)$")  # no indent: imported by the program


@dataclass(frozen=True)
class Timing:
    wall_s: float
    interpreter_s: float
    imports_s: float
    heaviest: tuple[str, ...]  # the top-level imports that cost most

    @property
    def startup_s(self) -> float:
        return self.interpreter_s + self.imports_s

    @property
    def work_s(self) -> float:
        return max(0.0, self.wall_s - self.startup_s)


def stage_commands(projects: list[str], with_train: bool) -> dict[str, str]:
    """name -> command of the projects' stages, as DVC resolves them, in DVC's order."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        stages = list(repo.index.stages)
    wanted = {}
    for stage in stages:
        kind, _, item = stage.name.partition("@")
        if item.split("-")[0] not in projects and item not in projects:
            continue
        if kind == "train" and not with_train:
            continue
        wanted[stage.name] = stage.cmd
    return wanted


def scratch_workspace(code_root: Path, into: Path) -> Path:
    """A copy of the workspace's data and results beside ``code_root``'s code (symlinked packages)."""
    into.mkdir(parents=True)
    for name in ("curriculum", "stages", "pipeline"):
        (into / name).symlink_to(code_root / name)
    for name in WORKSPACE_FILES:
        shutil.copy2(REPO / name, into / name)
    for name in WORKSPACE_DIRS:
        shutil.copytree(REPO / name, into / name, symlinks=True)
    return into


def interpreter_start_s() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-S", "-c", "pass"], check=True)
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.perf_counter() - started) / 2


def run_timed(command: str, cwd: Path, interpreter_s: float) -> Timing | None:
    """None when the command fails there (e.g. a stage the other commit doesn't have)."""
    argv = shlex.split(command)
    if argv[0] != "python":
        raise SystemExit(f"not a python stage command: {command}")
    argv = [sys.executable, "-X", "importtime", *argv[1:]]
    env = dict(os.environ, PYTHONPATH=str(cwd))
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        print(f"  `{command}` failed in {cwd}: {(result.stdout + result.stderr).splitlines()[-1:]}", flush=True)
        return None
    top_level = sorted(
        ((int(m[1]) / 1e6, m[2]) for m in map(_TOP_LEVEL_IMPORT.match, result.stderr.splitlines()) if m),
        reverse=True)
    heaviest = tuple(f"{name} {seconds:.2f}s" for seconds, name in top_level[:3] if seconds >= 0.1)
    return Timing(wall, interpreter_s, sum(seconds for seconds, _ in top_level), heaviest)


def median_timing(timings: list[Timing | None]) -> Timing | None:
    if None in timings:
        return None
    middle = sorted(timings, key=lambda t: t.wall_s)[len(timings) // 2]
    return Timing(statistics.median(t.wall_s for t in timings), middle.interpreter_s,
                  statistics.median(t.imports_s for t in timings), middle.heaviest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", action="append", help="project(s) to run (default: all three defaults)")
    parser.add_argument("--against", help="also run the commands with this commit's code, side by side")
    parser.add_argument("--repeat", type=int, default=1, help="runs per stage and code version (medians shown)")
    parser.add_argument("--train", action="store_true", help="include train stages (minutes)")
    args = parser.parse_args()
    projects = args.project or ["simple_nn", "image_classification", "forecasting"]
    commands = stage_commands(projects, args.train)
    interpreter_s = interpreter_start_s()

    with tempfile.TemporaryDirectory(prefix="stage-startup-") as tmp:
        versions = {"now": scratch_workspace(REPO, Path(tmp) / "now")}
        if args.against:
            worktree = Path(tmp) / "worktree"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(worktree), args.against],
                           check=True)
            versions = {args.against: scratch_workspace(worktree, Path(tmp) / "against"), **versions}
        try:
            results: dict[str, dict[str, Timing]] = {}
            for name, command in commands.items():
                results[name] = {}
                for label, cwd in versions.items():  # interleaved, so both see the same load
                    results[name][label] = median_timing(
                        [run_timed(command, cwd, interpreter_s) for _ in range(args.repeat)])
                print(report_line(name, results[name]), flush=True)
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False)
    print(summary(results, list(versions)))


def report_line(stage: str, by_version: dict[str, Timing]) -> str:
    cells = [f"{label}: start-up {t.startup_s:5.2f} s, work {t.work_s:6.2f} s" if t else f"{label}: n/a"
             for label, t in by_version.items()]
    last = next(reversed(by_version.values()))
    heaviest = last.heaviest if last else ()
    return f"{stage:42s} " + " | ".join(cells) + (f"   [{', '.join(heaviest)}]" if heaviest else "")


def summary(results: dict[str, dict[str, Timing]], labels: list[str]) -> str:
    both = {stage: by_version for stage, by_version in results.items() if all(by_version.values())}
    lines = ["\nstart-up = interpreter + every import the process did; work = wall - start-up"]
    for label in labels:
        startups = [by_version[label].startup_s for by_version in both.values()]
        lines.append(f"{label:>12s}: start-up median {statistics.median(startups):.2f} s, max {max(startups):.2f} s, "
                     f"total {sum(startups):.1f} s over the {len(startups)} stages both versions have")
    if len(labels) == 2:
        before = sum(by_version[labels[0]].startup_s for by_version in both.values())
        after = sum(by_version[labels[1]].startup_s for by_version in both.values())
        lines.append(f"total start-up, {labels[0]} / now: {before / after:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
