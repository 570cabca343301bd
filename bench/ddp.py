"""PyTorch DDP (torchrun, gloo on the CPU) against one process, side by side in one run.

Trains the image-classification CNN with the project's own train and evaluate stages on the
workspace's processed data (the default params: real MNIST, early stopping on validation loss),
in one process with ``threads`` threads, as ``processes`` DDP processes of ``threads / processes``
threads each (the same cores), and in one process with one process's share (how DDP scales),
alternating, ``--repeats`` times. Prints each run's epochs, training time, throughput (training
examples per second) and test accuracy, then the throughput ratios and the accuracy difference.

    dvc repro preprocess@image_classification   # the data it trains on
    python bench/ddp.py [--processes 2] [--threads 2] [--repeats 2] [--epochs N]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT, VARIANT = "image_classification", "torch"


def run_stage(module: str, params: Path, work: Path, *extra: str) -> None:
    command = [sys.executable, "-m", module, "--project", PROJECT, "--params", str(params), "--variant", VARIANT,
               "--data", f"data/{PROJECT}/processed", "--model-dir", str(work / "model"), *extra]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def train_and_score(processes: int, threads: int, epochs: int | None, train_examples: int, work: Path) -> dict[str, float]:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    section = params[PROJECT]
    if epochs is not None:
        section["train"].update(epochs=epochs, early_stopping=None)
    section["variants"][VARIANT]["train"] = {"processes": processes, "threads": threads}
    params_path = work / "params.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    started = time.perf_counter()
    run_stage("stages.train", params_path, work, "--live-dir", str(work / "live"), "--checkpoint-dir", str(work / "checkpoints"))
    wall = time.perf_counter() - started
    timing = json.loads((work / "live" / "timing.json").read_text())
    trained = json.loads((work / "live" / "metrics.json").read_text())
    run_stage("stages.evaluate", params_path, work, "--baselines", f"reports/{PROJECT}/baselines.json",
              "--metrics", str(work / "metrics.json"), "--plots", str(work / "plots"))
    metrics = json.loads((work / "metrics.json").read_text())
    epochs_run = trained["step"] + 1
    return {"epochs": epochs_run, "train_s": timing["train_seconds"], "wall_s": wall,
            "examples_per_s": epochs_run * train_examples / timing["train_seconds"],
            "test_accuracy": metrics["accuracy"]}


def _train_examples() -> int:
    from curriculum.layout import ProcessedData

    return len(ProcessedData.read(REPO_ROOT / f"data/{PROJECT}/processed").split("train")["y"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="threads in all: one process has them all, "
                                                               "each DDP process threads / processes")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, help="a fixed number of epochs (default: the params', early stopping on)")
    args = parser.parse_args()
    per_process = max(1, args.threads // args.processes)
    configs = {"1 process": (1, args.threads), f"DDP x{args.processes}": (args.processes, per_process),
               "1 process, 1 share": (1, per_process)}  # what one DDP process has: the scaling baseline
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    train_examples = _train_examples()
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as temporary:
        for repeat in range(args.repeats):
            for name, (processes, threads) in configs.items():
                work = Path(temporary) / f"{repeat}-{processes}x{threads}"
                work.mkdir()
                result = train_and_score(processes, threads, args.epochs, train_examples, work)
                runs[name].append(result)
                print(f"{name:>10} (threads {threads} each), run {repeat + 1}: {result['epochs']} epochs in "
                      f"{result['train_s']:.1f} s ({result['wall_s']:.1f} s with start-up), "
                      f"{result['examples_per_s']:.0f} examples/s, test accuracy {result['test_accuracy']:.4f}", flush=True)
    single, ddp = runs["1 process"], runs[f"DDP x{args.processes}"]
    throughput = {name: statistics.median(r["examples_per_s"] for r in results) for name, results in runs.items()}
    speed = throughput[f"DDP x{args.processes}"] / throughput["1 process"]
    scaling = throughput[f"DDP x{args.processes}"] / throughput["1 process, 1 share"]
    accuracy = statistics.mean(r["test_accuracy"] for r in ddp) - statistics.mean(r["test_accuracy"] for r in single)
    print(f"\nDDP x{args.processes} / 1 process with all {args.threads} threads: throughput {speed:.2f}x; "
          f"/ 1 process with {per_process} thread(s): {scaling:.2f}x (medians); "
          f"test accuracy {accuracy:+.4f} (means, DDP minus one process)")


if __name__ == "__main__":
    main()
