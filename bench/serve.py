"""The model server under a bounded load on loopback, beside onnxruntime in-process, in one run.

Starts ``python -m pipeline serve-models`` on the workspace's exported models (or ``--repo``);
``wrk`` (a second process, Debian's package) posts each model's own example body (from
``GET /v1/models``) over one keep-alive connection for a fixed time and reports p50/p99 latency
and requests/s per model; the same input through the same graph with onnxruntime in this process
(batch 1) is the floor HTTP adds to. Then the small CNN under ``--connections`` connections,
the server started alternately without (``--micro-batch 1``) and with micro-batching.

    python bench/serve.py [--repo .] [--seconds 10] [--connections 32] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from pipeline.serving.process import ServerProcess

REPO = Path(__file__).resolve().parent.parent
LATENCY_MODEL = "simple_nn-torch"  # the tabular MLP: the server's own cost, the model is ~10 us
BATCHING_MODEL = "image_classification-torch"  # the small CNN: where micro-batching should pay


# --------------------------------------------------------------------------- the load (wrk, a second process)

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open("{body}", "rb")
wrk.body = file:read("*a")
file:close()
"""
_DURATION = re.compile(r"^\s*(?P<value>[\d.]+)(?P<unit>us|ms|s)$")
_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def milliseconds(text: str) -> float:
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match["value"]) * _UNIT_MS[match["unit"]]


def parse_wrk(output: str) -> dict[str, float]:
    """p50/p99 from ``--latency``'s distribution, requests/s, and the failures wrk counted."""
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.MULTILINE))
    problems = re.findall(r"^\s*(Non-2xx or 3xx responses|Socket errors): (.+)$", output, re.MULTILINE)
    if problems or len(percentiles) != 2:
        raise SystemExit(f"wrk reported failures or no latency distribution:\n{output}")
    return {"p50_ms": milliseconds(percentiles["50"]), "p99_ms": milliseconds(percentiles["99"]),
            "per_s": float(re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)[1]),
            "requests": int(re.search(r"^\s*(\d+) requests in", output, re.MULTILINE)[1])}


def run_load(port: int, model: str, body: bytes, seconds: float, connections: int, work: Path) -> dict[str, float]:
    """``wrk`` (one thread, ``connections`` keep-alive connections) for ``seconds`` after a 1 s warm-up."""
    body_file = work / f"{model}.json"
    body_file.write_bytes(body)
    script = work / f"{model}.lua"
    script.write_text(WRK_SCRIPT.format(body=body_file))
    url = f"http://127.0.0.1:{port}/v1/models/{model}/predict"
    for duration in (1, seconds):
        result = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
                                 "-s", str(script), url],
                                capture_output=True, text=True, timeout=duration + 30)
        if result.returncode:
            raise SystemExit(f"wrk failed ({result.returncode}): {result.stdout}{result.stderr}")
    return parse_wrk(result.stdout)


# --------------------------------------------------------------------------- the server


def start_server(repo: Path, work: Path, *args: str) -> ServerProcess:
    return ServerProcess(repo, "--watch", "0", *args, log_path=work / "server.log")


def ready_models(server: ServerProcess) -> list[dict]:
    return [m for m in server.get("/v1/models")["models"] if m["status"] == "ready"]


# --------------------------------------------------------------------------- in-process onnxruntime


def in_process(repo: Path, model: dict, body: dict, repeats: int) -> dict[str, float]:
    """The same request's input through the same exported graph, in this process, batch 1."""
    from curriculum.projects import get_project
    from pipeline.serving.models import Workspace, load_model

    served = load_model(Workspace(repo), model["name"], model["project"], model["variant"], model["framework"],
                        max_batch=64, threads=1, dvc_hash=None, committed_hash=None, commit=None)
    interface = get_project(model["project"]).serving
    inputs = interface.model_inputs(served.request_model.model_validate(body), served.card, served.prepared)
    for _ in range(20):
        served.score(inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        served.score(inputs)
        times.append(time.perf_counter() - start)
    ms = np.asarray(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="load per measurement of the two bar models (the others get a third of it)")
    parser.add_argument("--connections", type=int, default=32, help="connections for the micro-batching comparison")
    parser.add_argument("--rounds", type=int, default=2, help="micro-batching off/on pairs, alternated")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: sh scripts/install_debian.sh wrk /usr/bin/wrk wrk")
    work = REPO / "build" / "bench_serve"
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs, server and wrk on the same loopback; models from {args.repo}")

    rows = []
    server = start_server(args.repo, work)
    try:
        models = ready_models(server)
        for model in models:
            body = model["input"]["example"]
            seconds = args.seconds if model["name"] in (LATENCY_MODEL, BATCHING_MODEL) else max(args.seconds / 3, 1)
            single = run_load(server.port, model["name"], json.dumps(body).encode(), seconds, 1, work)
            rows.append((model["name"], single, in_process(args.repo, model, body, 1000)))
            print(f"  {model['name']}: p50 {single['p50_ms']:.2f} ms, p99 {single['p99_ms']:.2f} ms", flush=True)
        image_body = json.dumps(next(m for m in models if m["name"] == BATCHING_MODEL)["input"]["example"]).encode()
    finally:
        server.stop()

    comparison = {"off": [], "on": []}
    for _ in range(args.rounds):
        for mode, extra in (("off", ("--micro-batch", "1")), ("on", ())):
            server = start_server(args.repo, work, *extra)
            try:
                result = run_load(server.port, BATCHING_MODEL, image_body, args.seconds, args.connections, work)
                result["mean_batch"] = next(m for m in ready_models(server)
                                            if m["name"] == BATCHING_MODEL).get("micro_batching", {}).get("mean_batch", 1)
                comparison[mode].append(result)
            finally:
                server.stop()

    print(f"\none connection, {args.seconds:g} s per bar model ({max(args.seconds / 3, 1):.1f} s the others):")
    print(f"{'model':34} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}   {'in-process p50 / p99 ms':>24}")
    for name, result, local in rows:
        print(f"{name:34} {result['p50_ms']:8.2f} {result['p99_ms']:8.2f} {result['per_s']:8.0f}   "
              f"{local['p50_ms']:11.3f} / {local['p99_ms']:.3f}")
    print(f"\nmicro-batching, {BATCHING_MODEL}, {args.connections} connections, {args.seconds:g} s each, alternated:")
    for mode in ("off", "on"):
        for result in comparison[mode]:
            print(f"  {mode:4} p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  {result['per_s']:7.0f} req/s"
                  f"  mean batch {result['mean_batch']}")
    mean = {mode: {key: float(np.mean([r[key] for r in results])) for key in ("per_s", "p99_ms")}
            for mode, results in comparison.items()}
    print(f"  throughput on/off: {mean['on']['per_s'] / mean['off']['per_s']:.2f}x (bar: 1.5x); "
          f"p99 on/off: {mean['on']['p99_ms'] / mean['off']['p99_ms']:.2f}x (bar: <= 1)")
    latency = next(result for name, result, _ in rows if name == LATENCY_MODEL)
    print(f"  {LATENCY_MODEL} over loopback, one connection: p99 {latency['p99_ms']:.2f} ms (bar: 2 ms)")


if __name__ == "__main__":
    main()
