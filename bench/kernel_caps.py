"""What capping the numeric libraries at AVX2 costs (see curriculum/numerics.py), side by side.

Each measurement runs in a fresh process (the caps must be set before the libraries load),
alternating capped and native, and times training steps of the pipeline's own models on
generated inputs of the real shapes (a timing workload, not a dataset): the image CNN in
PyTorch and Keras, and the forecasting GRU in PyTorch.

    python bench/kernel_caps.py [--steps 30] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

WORKLOADS = ("torch_cnn", "keras_cnn", "torch_gru")


def _time_steps(workload: str, steps: int) -> float:
    import numpy as np

    rng = np.random.default_rng(0)
    if workload.startswith("torch"):
        import torch

        from curriculum.frameworks.torch_backend import set_threads

        set_threads(2 if workload == "torch_cnn" else 1)
        torch.manual_seed(0)
        if workload == "torch_cnn":
            from curriculum.models.torch_cnn import build_small_cnn
            from curriculum.projects.image_classification import CNNTrain

            train = CNNTrain.model_validate({
                "epochs": 1, "batch_size": 64, "learning_rate": 1e-3, "dropout": 0.5, "l2": 0.0, "batch_norm": False,
                "early_stopping": None, "reduce_lr": None, "log_every": 1, "threads": 2, "processes": 1, "device": "cpu", "monitor": "loss"})
            model = build_small_cnn({"input_shape": [28, 28, 1], "n_outputs": 10}, train)
            x = torch.from_numpy(rng.random((64, 28, 28, 1), dtype=np.float32))
            y = torch.from_numpy(rng.integers(0, 10, 64))
            loss_fn = torch.nn.CrossEntropyLoss()
        else:
            from curriculum.models.torch_forecast import build_gru
            from curriculum.projects.forecasting import ForecastTrain

            train = ForecastTrain.model_validate({
                "epochs": 1, "batch_size": 32, "learning_rate": 0.01, "l2": 0.0, "units": 32, "layers": 1,
                "dropout": 0.5, "heads": 4, "loss": "mse", "early_stopping": None, "reduce_lr": None,
                "log_every": 1, "threads": 1, "processes": 1, "device": "cpu", "monitor": "loss"})
            model = build_gru({"lookback": 56, "n_features": 6, "horizon": 7}, train)
            x = torch.from_numpy(rng.random((32, 56, 6), dtype=np.float32))
            y = torch.from_numpy(rng.random((32, 7), dtype=np.float32))
            loss_fn = torch.nn.MSELoss()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step() -> None:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras

        from curriculum.frameworks.keras_backend import set_threads
        from curriculum.models.keras_cnn import build_small_cnn
        from curriculum.projects.image_classification import CNNTrain

        set_threads(2)
        keras.utils.set_random_seed(0)
        train = CNNTrain.model_validate({
            "epochs": 1, "batch_size": 64, "learning_rate": 1e-3, "dropout": 0.5, "l2": 0.0, "batch_norm": False,
            "early_stopping": None, "reduce_lr": None, "log_every": 1, "threads": 2, "processes": 1, "device": "cpu", "monitor": "loss"})
        model = build_small_cnn({"input_shape": [28, 28, 1], "n_outputs": 10}, train)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        x, y = rng.random((64, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 64)

        def step() -> None:
            model.train_on_batch(x, y)
    for _ in range(3):  # warm-up: kernel selection, graph tracing
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def _measure(workload: str, capped: bool, steps: int) -> float:
    code = (
        "import json, sys\n"
        + ("from curriculum.numerics import cap_kernels; cap_kernels()\n" if capped else "")
        + f"from bench.kernel_caps import _time_steps\nprint(json.dumps(_time_steps({workload!r}, {steps})))"
    )
    env = {key: value for key, value in os.environ.items()
           if key not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "NPY_DISABLE_CPU_FEATURES",
                          "OPENBLAS_CORETYPE")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"{'workload':<10} {'native ms/step':>15} {'AVX2 cap ms/step':>17} {'cap/native':>11}")
    for workload in WORKLOADS:
        native, capped = [], []
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
            native.append(_measure(workload, False, args.steps))
            capped.append(_measure(workload, True, args.steps))
        n, c = min(native), min(capped)
        print(f"{workload:<10} {n * 1e3:>15.2f} {c * 1e3:>17.2f} {c / n:>10.2f}x", flush=True)


if __name__ == "__main__":
    main()
