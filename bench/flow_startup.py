"""What a no-op Prefect flow costs next to a no-op ``dvc repro`` of the same project, side by side.

On a workspace where the project is up to date, each round runs ``dvc repro`` of the project's
last stages (so of all its stages) and ``python -m pipeline run <project>`` (this checkout's code;
with ``--compare-with DIR`` also that checkout's, e.g. a ``git worktree`` of the previous commit),
in a rotating order, and reports medians. The flow's time is split by the timestamps of its own
log lines: start-up until the API server process is launched (python and imports), server start
until the flow run begins, ``check_before_stages``, the stage tasks, publishing metrics, and exit
(stopping the server). Each flow starts its own ephemeral server in a throw-away PREFECT_HOME
(one uncounted run of each warms it up), or with ``--api-url`` uses that running server.

    python bench/flow_startup.py [--repo PATH] [--project simple_nn] [--rounds 5] [--compare-with DIR]
                                 [--api-url http://127.0.0.1:4200/api]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's pipeline package, not the one the venv installed

from pipeline.dvc_bridge import project_stages, venv_dvc  # noqa: E402

# Prefect's console lines: "20:48:13.666 | INFO    | Task run 'x-028' - message"
LOG_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) \| \w+ *\| (.*)$")
PHASES = (
    ("start-up until the server process (python, imports)", "start", "server"),
    ("server start until the flow run begins", "server", "flow"),
    ("check_before_stages (params, cache, DVC status)", "flow", "checked"),
    ("stage tasks", "checked", "stages"),
    ("metrics artifacts and flow end", "stages", "flow_end"),
    ("exit (Prefect's shutdown, stopping the server)", "flow_end", "exit"),
)


def log_events(output: str, started: float, stages: list[str]) -> dict[str, float]:
    """Wall-clock times (epoch seconds) of the flow's landmarks, from its log lines."""
    day = datetime.fromtimestamp(started).date()
    events: dict[str, float] = {}
    for line in output.splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        clock, message = match.groups()
        when = datetime.combine(day, datetime.strptime(clock, "%H:%M:%S.%f").time())
        if when.timestamp() < started - 3600:  # the run crossed midnight
            when += timedelta(days=1)
        stamp = when.timestamp()
        if "Starting temporary server on" in message:
            events.setdefault("server", stamp)
        elif "Beginning flow run" in message:
            events["flow"] = stamp
        elif message.startswith("Task run 'check_before_stages") and "Finished in state" in message:
            events["checked"] = stamp
        elif "Finished in state" in message and any(message.startswith(f"Task run '{s}-") for s in stages):
            events["stages"] = stamp
        elif message.startswith("Flow run ") and "Finished in state" in message:
            events["flow_end"] = stamp
    return events


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """(start, end, output) of one command, which must succeed."""
    start = time.time()
    result = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    end = time.time()
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}")
    return start, end, result.stdout


def flow_run(code: Path, repo: Path, project: str, stages: list[str], env: dict[str, str]) -> dict[str, float]:
    """One ``python -m pipeline run``: its total and per-phase seconds."""
    command = [sys.executable, "-m", "pipeline", "--repo", str(repo), "run", project]
    start, end, output = timed(command, code, env)
    events = {"start": start, "exit": end, **log_events(output, start, stages)}
    if "server" not in events and "flow" in events:  # a configured server: nothing to start
        events["server"] = events["flow"]
    ran = re.findall(r" - (\S+@\S+) ran$", output, re.MULTILINE)
    if ran or "stages" not in events:
        raise SystemExit(f"not a no-op flow run of {project} (ran: {', '.join(ran) or '?'}):\n{output[-3000:]}")
    phases = {label: events[b] - events[a] for label, a, b in PHASES if a in events and b in events}
    return {"total": end - start, **phases}


def median_import_seconds(module: str, env: dict[str, str], rounds: int) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return statistics.median(
        float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             check=True).stdout)
        for _ in range(rounds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="a workspace where the project is up to date")
    parser.add_argument("--project", default="simple_nn")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compare-with", type=Path, metavar="DIR",
                        help="another checkout whose `python -m pipeline run` to time alongside this one's")
    parser.add_argument("--api-url", help="a running Prefect server's API for the flows (PREFECT_API_URL) "
                                          "instead of one ephemeral server per run")
    args = parser.parse_args(argv)
    repo, project = args.repo.resolve(), args.project.replace("-", "_")

    nodes = project_stages(repo, project)
    stages = [node.name for node in nodes]
    upstream = {name for node in nodes for name in node.upstream}
    dvc_repro, env = venv_dvc("repro", *(name for name in stages if name not in upstream))
    status_command = venv_dvc("status", "--json", *stages)[0]
    changed = json.loads(subprocess.run(status_command, cwd=repo, env=env, capture_output=True, text=True,
                                        check=True).stdout or "{}")
    if changed:
        raise SystemExit(f"{project} is not up to date in {repo} (dvc status: {', '.join(changed)}): "
                         "run `dvc repro` there first; this measures runs with nothing to do")
    codes = {"flow (this checkout)": ROOT}
    if args.compare_with:
        codes[f"flow ({args.compare_with.resolve().name})"] = args.compare_with.resolve()

    samples: dict[str, list[dict[str, float]]] = {"dvc repro": [], **{name: [] for name in codes}}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="flow-startup-prefect-") as prefect_home:
        flow_env = {key: value for key, value in env.items() if key != "PREFECT_API_URL"}
        flow_env.update(PREFECT_HOME=prefect_home, PREFECT_LOGGING_LEVEL="INFO")
        if args.api_url:
            flow_env["PREFECT_API_URL"] = args.api_url
        for code in codes.values():  # uncounted: migrates the fresh database, warms the file cache
            flow_run(code, repo, project, stages, flow_env)
        runs = [("dvc repro", None), *codes.items()]
        for round_ in range(args.rounds):
            for name, code in runs[round_ % len(runs):] + runs[:round_ % len(runs)]:
                if code is None:
                    start, end, _ = timed(dvc_repro, repo, env)
                    samples[name].append({"total": end - start})
                else:
                    samples[name].append(flow_run(code, repo, project, stages, flow_env))
            print(f"round {round_ + 1}/{args.rounds}: "
                  + ", ".join(f"{name} {runs_[-1]['total']:.2f} s" for name, runs_ in samples.items()), flush=True)
    load_after = os.getloadavg()
    import_prefect = median_import_seconds("prefect", env, 3)

    def med(name: str, key: str) -> float | None:
        values = [s[key] for s in samples[name] if key in s]
        return statistics.median(values) if values else None

    names = list(samples)
    width = 54
    server = f"the Prefect server at {args.api_url}" if args.api_url else "an ephemeral Prefect server per run"
    print(f"\nNo-op runs of {project} ({len(stages)} stages) in {repo}, {server}: medians of {args.rounds} rounds")
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after ({os.cpu_count()} CPUs)\n")
    print(f"{'':<{width}}" + "".join(f"{name:>24}" for name in names))
    print(f"{'total':<{width}}" + "".join(f"{med(name, 'total'):>22.2f} s" for name in names))
    base = med("dvc repro", "total")
    print(f"{'x no-op dvc repro':<{width}}" + "".join(f"{med(name, 'total') / base:>23.1f}x" for name in names))
    print("\nflow breakdown (from the run's own log timestamps):")
    for label, _, _ in PHASES:
        cells = [med(name, label) for name in names]
        print(f"  {label:<{width - 2}}" + "".join(f"{'':>24}" if c is None else f"{c:>22.2f} s" for c in cells))
    print(f"\nfor reference: `import prefect` alone takes {import_prefect:.2f} s (median of 3)")


if __name__ == "__main__":
    main()
