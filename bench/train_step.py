"""Pipeline training loop vs a bare PyTorch loop, side by side in one run.

The torch back end adds DVCLive logging, validation each epoch, checkpointing, the LR
scheduler and progress bars to a plain loop; this measures what that costs per epoch on the
image-classification CNN and prints the ratio.

    python bench/train_step.py [--images 2000] [--epochs 3] [--repeats 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from torch import nn

from curriculum.frameworks import torch_backend
from curriculum.layout import ProcessedData
from curriculum.models.torch_cnn import build_small_cnn
from curriculum.projects.image_classification import PROJECT, CNNTrain

TRAIN = CNNTrain.model_validate({
    "epochs": 3, "batch_size": 64, "learning_rate": 1e-3, "dropout": 0.5, "l2": 0.0, "batch_norm": False,
    "early_stopping": None, "reduce_lr": {"factor": 0.5, "patience": 2, "min_lr": 1e-5}, "log_every": 1,
    "threads": 2, "processes": 1, "device": "cpu", "monitor": "loss", "augment": None,
})
SPEC = {"input_shape": [28, 28, 1], "n_outputs": 10}


def make_data(images: int, seed: int = 0) -> ProcessedData:
    """Generated (random) digits-shaped data: a timing workload, not a dataset."""
    rng = np.random.default_rng(seed)
    x = rng.random((images, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, images)
    split = int(images * 0.9)
    return ProcessedData(
        splits={"train": {"x": x[:split], "y": y[:split]}, "val": {"x": x[split:], "y": y[split:]}},
        info={"class_names": [str(digit) for digit in range(10)]},
    )


def bare_loop(data: ProcessedData, epochs: int) -> float:
    """Adam on shuffled mini-batches, nothing else. The CNN takes NHWC, as in the pipeline."""
    torch.manual_seed(0)
    model = build_small_cnn(SPEC, TRAIN)
    optimizer = torch.optim.Adam(model.parameters(), lr=TRAIN.learning_rate)
    x = torch.from_numpy(data.split("train")["x"])
    y = torch.from_numpy(data.split("train")["y"])
    loss_fn = nn.CrossEntropyLoss()
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        model.train()
        for i in range(0, len(x), TRAIN.batch_size):
            index = order[i:i + TRAIN.batch_size]
            optimizer.zero_grad()
            loss_fn(model(x[index]), y[index]).backward()
            optimizer.step()
    return (time.perf_counter() - started) / epochs


def pipeline_loop(data: ProcessedData, epochs: int) -> float:
    torch_backend.seed_everything(0)
    model = build_small_cnn(SPEC, TRAIN)
    with tempfile.TemporaryDirectory() as tmp:
        with Live(dir=str(Path(tmp) / "live"), save_dvc_exp=False, dvcyaml=None) as live:
            started = time.perf_counter()
            torch_backend.fit(model, data, PROJECT.task, TRAIN.model_copy(update={"epochs": epochs}), 0, Path(tmp), live)
            return (time.perf_counter() - started) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    data = make_data(args.images)
    bare, pipeline = [], []
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        bare.append(bare_loop(data, args.epochs))
        pipeline.append(pipeline_loop(data, args.epochs))
    b, p = min(bare), min(pipeline)
    print(f"torch threads {torch.get_num_threads()}, {args.images} images, {args.epochs} epochs, best of {args.repeats}")
    print(f"bare loop      {b:.3f} s/epoch")
    print(f"pipeline loop  {p:.3f} s/epoch")
    print(f"ratio pipeline/bare: {p / b:.2f}x")


if __name__ == "__main__":
    main()
