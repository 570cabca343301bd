"""Native PyTorch: a plain training loop with the same callbacks as Keras, and export.

Nothing here knows the task: the loss, the targets, the epoch metric and the prediction head
come from the project's task, the architecture (and its input layout) from the model builder.
"""
from __future__ import annotations

import copy
import random
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from curriculum.frameworks.checkpoints import Checkpoints
from curriculum.frameworks.epochs import EpochEnd
from curriculum.layout import ProcessedData
from curriculum.tasks.base import Predictions, Task

if TYPE_CHECKING:
    from dvclive import Live  # only train logs, and imports it itself

MODEL_FILE = "model.pt"


def set_threads(threads: int | None) -> None:
    """Cap intra-op threads: small models lose more to thread hand-offs (and to a busy second core)
    than they gain from parallel kernels."""
    if threads is not None:
        torch.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    """Seed every generator and forbid non-deterministic kernels, so reruns match bit for bit."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


class PredictionModel(nn.Module):
    """The trained module followed by the task's head (softmax, sigmoid, identity...): what
    prediction, export and serving run. ``output_names`` name its outputs."""

    def __init__(self, model: nn.Module, head: nn.Module, output_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.head = head
        self.output_names = output_names

    def forward(self, x: torch.Tensor) -> Any:
        return self.head(self.model(x))


def as_tensor(x: np.ndarray) -> torch.Tensor:
    """The array as a tensor of its own dtype (float images, integer token ids...)."""
    return torch.from_numpy(np.ascontiguousarray(x))


def _l2_penalty(model: nn.Module, l2: float) -> torch.Tensor:
    """Keras' kernel_regularizer: l2 * sum(w^2) over conv and dense kernels (not biases, not BN)."""
    kernels = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return l2 * sum((w ** 2).sum() for w in kernels)


def _evaluate(model: nn.Module, task: Task, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        output = model(x)
        return loss_fn(output, y).item(), task.torch_metric(output, y).mean().item()


STATE_FILE = "state.pt"


def _epoch_inputs(
    task: Task, train_split: Any, epoch: int, train: Any, seed: int, x_train: torch.Tensor, shuffle: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch's training inputs and example order: the task's own for this epoch when it has
    them (fresh augmentation, from ``(seed, epoch)``: the same as Keras'), else ``x_train`` in a
    permutation drawn from ``shuffle``."""
    fresh = task.epoch_batches(train_split, epoch, train, seed)
    if fresh is None:
        return x_train, torch.randperm(len(x_train), generator=shuffle)
    inputs, order = fresh
    return as_tensor(inputs), torch.from_numpy(np.asarray(order, dtype=np.int64))


def fit(
    model: nn.Module, data: ProcessedData, task: Task, train: Any, seed: int, model_dir: Path, live: Live,
    checkpoints: Checkpoints | None = None,
) -> PredictionModel:
    """Adam + early stopping, best weights and reduce-LR-on-plateau, all on validation loss.

    The best epoch's weights are written to ``model_dir`` when training ends. With
    ``checkpoints``, every epoch ends with a checkpoint of the whole training state (weights,
    optimizer, scheduler, early-stopping counters, best weights, the shuffling and global RNGs),
    and a checkpoint left by a killed run is continued from its next epoch, exactly.
    """
    train_split, val_split = data.split("train"), data.split("val")
    x_train, x_val = as_tensor(task.inputs(train_split)), as_tensor(task.inputs(val_split))
    y_train, y_val = task.torch_targets(task.targets(train_split)), task.torch_targets(task.targets(val_split))
    loss_fn = task.torch_loss(train)
    # Shuffled mini-batches by slicing a seeded permutation: measured faster here than a
    # DataLoader over a TensorDataset, which indexes and re-stacks every example (bench/).
    batch_size = train.batch_size or len(x_train)
    shuffle = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=train.learning_rate)
    reduce_lr = train.reduce_lr
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=reduce_lr.factor, patience=reduce_lr.patience, min_lr=reduce_lr.min_lr
    ) if reduce_lr else None
    best: dict[str, Any] = {}

    def keep_best() -> None:
        best["weights"] = copy.deepcopy(model.state_dict())

    end_epoch = EpochEnd(live, train, task, save_checkpoint=keep_best)

    def training_state() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "best": best.get("weights"), "shuffle": shuffle.get_state(), "torch_rng": torch.get_rng_state()}

    first_epoch, stopped = 1, False
    resumed = checkpoints.resumed if checkpoints is not None else None
    if resumed is not None:
        saved = torch.load(resumed.files / STATE_FILE, weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        if saved["best"] is not None:
            best["weights"] = saved["best"]
        shuffle.set_state(saved["shuffle"])
        torch.set_rng_state(saved["torch_rng"])
        end_epoch.restore(resumed.state["epoch_end"])
        checkpoints.resume_global_rngs()
        first_epoch, stopped = resumed.epoch + 1, resumed.stopped

    for epoch in range(first_epoch, 1 if stopped else train.epochs + 1):
        model.train()
        total_loss, total_metric, seen = 0.0, 0.0, 0
        inputs, order = _epoch_inputs(task, train_split, epoch, train, seed, x_train, shuffle)
        starts = tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch}/{train.epochs}",
                      unit="batch", leave=False, disable=None)  # None: no bars when not on a terminal (logs)
        for start in starts:
            index = order[start:start + batch_size]
            xb, yb = inputs[index], y_train[index]
            optimizer.zero_grad()
            output = model(xb)
            loss = loss_fn(output, yb) + (_l2_penalty(model, train.l2) if train.l2 else 0.0)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(xb)
            total_metric += task.torch_metric(output, yb).sum().item()
            seen += len(xb)
        val_loss, val_metric = _evaluate(model, task, loss_fn, x_val, y_val)
        learning_rate = optimizer.param_groups[0]["lr"]
        stop = end_epoch(epoch, total_loss / seen, total_metric / seen, val_loss, val_metric, learning_rate)
        if not stop and scheduler is not None:
            scheduler.step(end_epoch.score(val_loss, val_metric))
        if checkpoints is not None:
            state = training_state()
            checkpoints.save(epoch, stop, {"epoch_end": end_epoch.state()},
                             lambda folder: torch.save(state, folder / STATE_FILE))
        if stop:
            break
    if "weights" not in best:
        raise RuntimeError("no epoch had a finite validation loss: there are no best weights to keep")
    model.load_state_dict(best["weights"])
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(best["weights"], model_dir / MODEL_FILE)
    return PredictionModel(model.eval(), task.torch_head(), task.output_names).eval()


def load(model_dir: Path, build: Callable[[], nn.Module], task: Task, train: Any = None) -> PredictionModel:
    """Rebuild the architecture and load the best checkpoint's weights (no pickle)."""
    model = build()
    model.load_state_dict(torch.load(model_dir / MODEL_FILE, weights_only=True))
    return PredictionModel(model.eval(), task.torch_head(), task.output_names).eval()


def _named(outputs: Any, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    if isinstance(outputs, dict):
        return outputs
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return dict(zip(names, outputs, strict=True))


def predict(model: PredictionModel, x: np.ndarray, batch_size: int = 1024) -> Predictions:
    with torch.no_grad():
        batches = [_named(model(as_tensor(x[i:i + batch_size])), model.output_names) for i in range(0, len(x), batch_size)]
    return {name: torch.cat([batch[name] for batch in batches]).numpy() for name in model.output_names}


class FittedScaler(nn.Module):
    """A scaler fitted in preprocessing, folded into a graph as fixed buffers: ``standardise``
    maps raw values to model units, ``(x - mean) / scale``; otherwise back, ``x * scale + mean``."""

    def __init__(self, scaler: dict, standardise: bool):
        super().__init__()
        self.standardise = standardise
        self.register_buffer("mean", torch.as_tensor(np.asarray(scaler["mean"], dtype=np.float32)))
        self.register_buffer("scale", torch.as_tensor(np.asarray(scaler["scale"], dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale if self.standardise else x * self.scale + self.mean


class RawInputOutput(nn.Module):
    """The model taking raw inputs (the fitted input scaler, then any frozen stem, in front) and
    answering in original units (the output scaler undone behind it)."""

    def __init__(self, model: PredictionModel, input_scaler: dict | None, output_scaler: dict | None,
                 stem: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.standardise = FittedScaler(input_scaler, standardise=True) if input_scaler else nn.Identity()
        self.stem = stem.eval() if stem is not None else nn.Identity()
        self.unscale = FittedScaler(output_scaler, standardise=False) if output_scaler else nn.Identity()

    def forward(self, x: torch.Tensor) -> Any:
        outputs = self.model(self.stem(self.standardise(x)))
        if isinstance(outputs, (tuple, list)):
            return tuple(self.unscale(output) for output in outputs)
        return self.unscale(outputs)


def export(
    model: PredictionModel, export_dir: Path, sample: np.ndarray,
    input_scaler: dict | None = None, output_scaler: dict | None = None, stem: nn.Module | None = None,
) -> dict[str, Path]:
    """Write a ``torch.export`` program (.pt2) and an ONNX graph, both with a dynamic batch axis,
    taking raw inputs and giving outputs in original units when scalers are given; a frozen
    ``stem`` (its cached output is what the model takes) goes in front."""
    export_dir.mkdir(parents=True, exist_ok=True)
    wrapped = input_scaler or output_scaler or stem is not None
    exported = RawInputOutput(model, input_scaler, output_scaler, stem).eval() if wrapped else model
    native, onnx_path = export_dir / "model.pt2", export_dir / "model.onnx"
    example = (as_tensor(sample[:2]),)
    dynamic_shapes = {"x": {0: torch.export.Dim("batch")}}
    with warnings.catch_warnings():  # nn.GRU/LSTM re-assign their flat weights while traced: harmless
        warnings.filterwarnings("ignore", message=r"The tensor attributes .* were assigned during export")
        program = torch.export.export(exported, example, dynamic_shapes=dynamic_shapes)
    for node in program.graph.nodes:  # source stack traces name this checkout's absolute paths:
        node.meta.pop("stack_trace", None)  # without them a clone elsewhere exports the same bytes
    torch.export.save(program, native)
    # ONNX through torch's TorchScript-based exporter (``dynamo=False``; deprecated since torch 2.9,
    # present in the pinned one), which traces the module again. It maps LSTM/GRU cells and attention
    # to ONNX operators directly: 25-30x faster than the dynamo exporter, which re-decomposes the
    # program (bench/onnx_export.py), and the exporter detection models need.
    output_names = list(model.output_names)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the exporter's, said once above
        # Its cautions are checked, not assumed. Shape checks read while tracing become constants,
        # which is right for inputs whose non-batch shape is fixed; the export stage's parity run
        # feeds the test split (varied lengths, masks) and its first example alone
        # (curriculum.onnx_check), so a graph that kept the traced batch size, or indexed wrongly, fails there.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"Exporting a model to ONNX with a batch_size other than 1")
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator of advanced indexing")
        torch.onnx.export(exported, example, onnx_path, dynamo=False, input_names=["x"],
                          output_names=output_names, dynamic_axes={name: {0: "batch"} for name in ["x", *output_names]})
    return {"native": native, "onnx": onnx_path}
