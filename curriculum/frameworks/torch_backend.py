"""Native PyTorch: a plain training loop with the same callbacks as Keras, and export.

Nothing here knows the task: the loss, the targets, the epoch metric and the prediction head
come from the project's task, the architecture (and its input layout) from the model builder.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from curriculum.frameworks import launched_rank
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
    """Seed every generator and forbid non-deterministic kernels, so reruns match bit for bit.

    On CUDA that also takes cuBLAS' fixed workspace (read when CUDA starts, so set before any
    tensor reaches the GPU) and cuDNN's deterministic algorithms without autotuning."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)


def training_device(device: str) -> torch.device:
    """The ``train.device`` param as a device: ``auto`` is CUDA when torch sees a GPU, else the CPU.
    Under DDP each process takes the GPU of its local rank."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but torch sees no CUDA device (use auto or cpu)")
    if device == "cuda" and launched_rank() is not None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device)


def launch(processes: int, module: str, arguments: list[str]) -> int:
    """Run ``python -m module arguments`` as ``processes`` DDP processes under torchrun
    (``torch.distributed.run --standalone``: a rendezvous on this machine) and return its exit status."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", module, *arguments]
    print(f"training in {processes} processes: {' '.join(command[1:])}", flush=True)
    return subprocess.run(command).returncode


def _join_process_group(device: torch.device) -> tuple[int, int]:
    """This process's rank and the world size, joining torchrun's process group when launched:
    gloo on the CPU, NCCL on GPUs."""
    if launched_rank() is None:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


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


def _forward(model: nn.Module, x: torch.Tensor, y: torch.Tensor, takes_targets: bool) -> Any:
    """The output the task's loss takes: the module's raw output, or, for a module with
    ``takes_targets = True`` (a detector that computes its own losses, torchvision's convention),
    what it returns when given the targets too."""
    return model(x, y) if takes_targets else model(x)


def as_tensor(x: np.ndarray) -> torch.Tensor:
    """The array as a tensor of its own dtype (float images, integer token ids...)."""
    return torch.from_numpy(np.ascontiguousarray(x))


def _l2_penalty(model: nn.Module, l2: float) -> torch.Tensor:
    """Keras' kernel_regularizer: l2 * sum(w^2) over conv and dense kernels (not biases, not BN)."""
    kernels = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return l2 * sum((w ** 2).sum() for w in kernels)


def _evaluate(model: nn.Module, task: Task, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, device: torch.device,
              rank: int = 0, world: int = 1) -> tuple[float, float]:
    """Validation loss and metric. Under DDP each process scores every ``world``-th example and
    the sums are added up, so all processes see the same figures and stop at the same epoch."""
    model.eval()
    takes_targets = getattr(model, "takes_targets", False)
    with torch.no_grad():
        if world == 1:
            y = y.to(device)
            output = _forward(model, x.to(device), y, takes_targets)
            return loss_fn(output, y).item(), task.torch_metric(output, y).mean().item()
        xs, ys = x[rank::world].to(device), y[rank::world].to(device)
        output = _forward(model, xs, ys, takes_targets)
        totals = torch.tensor([loss_fn(output, ys).item() * len(xs), task.torch_metric(output, ys).sum().item(), len(xs)],
                              dtype=torch.float64)
    dist.all_reduce(totals)
    loss_sum, metric_sum, count = totals.tolist()
    return loss_sum / count, metric_sum / count


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict copied to the CPU: what is kept as the best weights and saved, whatever the device."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}


STATE_FILE = "state.pt"


def _epoch_inputs(
    task: Task, train_split: Any, epoch: int, train: Any, seed: int, x_train: torch.Tensor, y_train: torch.Tensor,
    shuffle: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One epoch's training inputs, targets and example order: the task's own for this epoch when
    it has them (fresh augmentation, from ``(seed, epoch)``: the same as Keras'; new targets too
    when augmentation moves them), else ``x_train`` and ``y_train`` in a permutation drawn from ``shuffle``."""
    fresh = task.epoch_batches(train_split, epoch, train, seed)
    if fresh is None:
        return x_train, y_train, torch.randperm(len(x_train), generator=shuffle)
    inputs, order, *targets = fresh
    y = task.torch_targets(targets[0]) if targets else y_train
    return as_tensor(inputs), y, torch.from_numpy(np.asarray(order, dtype=np.int64))


def fit(
    model: nn.Module, data: ProcessedData, task: Task, train: Any, seed: int, model_dir: Path, live: Live,
    checkpoints: Checkpoints | None = None,
) -> PredictionModel:
    """Adam + early stopping, best weights and reduce-LR-on-plateau, all on validation loss.

    The best epoch's weights are written to ``model_dir`` when training ends. With
    ``checkpoints``, every epoch ends with a checkpoint of the whole training state (weights,
    optimizer, scheduler, early-stopping counters, best weights, the shuffling and global RNGs),
    and a checkpoint left by a killed run is continued from its next epoch, exactly.

    On ``train.device``. Under torchrun (``train.processes`` > 1) the model is wrapped in
    DistributedDataParallel: every process draws the same epoch order, takes every N-th example
    of each global batch and averages gradients with the others; rank 0 alone logs, checkpoints
    (it passes a resumed state on to the others) and writes the model.
    """
    device = training_device(train.device)
    rank, world = _join_process_group(device)
    train_split, val_split = data.split("train"), data.split("val")
    x_train, x_val = as_tensor(task.inputs(train_split)), as_tensor(task.inputs(val_split))
    y_train, y_val = task.torch_targets(task.targets(train_split)), task.torch_targets(task.targets(val_split))
    loss_fn = task.torch_loss(train)
    # Shuffled mini-batches by slicing a seeded permutation: measured faster here than a
    # DataLoader over a TensorDataset, which indexes and re-stacks every example (bench/).
    batch_size = train.batch_size or len(x_train)
    shuffle = torch.Generator().manual_seed(seed)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train.learning_rate)
    reduce_lr = train.reduce_lr
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=reduce_lr.factor, patience=reduce_lr.patience, min_lr=reduce_lr.min_lr
    ) if reduce_lr else None
    best: dict[str, Any] = {}

    def keep_best() -> None:
        best["weights"] = _cpu_copy(model.state_dict())

    end_epoch = EpochEnd(live, train, task, save_checkpoint=keep_best)

    def training_state() -> dict[str, Any]:
        return {"model": _cpu_copy(model.state_dict()), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "best": best.get("weights"), "shuffle": shuffle.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}

    first_epoch, stopped = 1, False
    resumed = checkpoints.resumed if checkpoints is not None else None
    restart = None
    if resumed is not None:
        restart = {"saved": torch.load(resumed.files / STATE_FILE, weights_only=True, map_location="cpu"),
                   "epoch_end": resumed.state["epoch_end"], "epoch": resumed.epoch, "stopped": resumed.stopped}
        checkpoints.resume_global_rngs()
    if world > 1:  # rank 0 holds the checkpoints: the other processes resume from what it read
        shared = [restart]
        dist.broadcast_object_list(shared, src=0)
        restart = shared[0]
    if restart is not None:
        saved = restart["saved"]
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        if saved["best"] is not None:
            best["weights"] = saved["best"]
        shuffle.set_state(saved["shuffle"])
        torch.set_rng_state(saved["torch_rng"])
        if saved.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        end_epoch.restore(restart["epoch_end"])
        first_epoch, stopped = restart["epoch"] + 1, restart["stopped"]
    # DDP broadcasts rank 0's weights (and buffers, before every forward) and averages gradients.
    trained = DistributedDataParallel(model) if world > 1 else model
    takes_targets = getattr(model, "takes_targets", False)
    # A weight with a size-1 axis (a conv on one input channel) may have any stride on that axis:
    # DDP then warns that its gradient's layout differs from the bucket's, which costs nothing here.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

    for epoch in range(first_epoch, 1 if stopped else train.epochs + 1):
        trained.train()
        totals = torch.zeros(3, dtype=torch.float64)  # loss and metric summed over examples, examples seen
        inputs, targets, order = _epoch_inputs(task, train_split, epoch, train, seed, x_train, y_train, shuffle)
        starts = tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch}/{train.epochs}",
                      unit="batch", leave=False, disable=None if rank == 0 else True)  # None: no bars in logs
        for start in starts:
            index = order[start:start + batch_size]
            if len(index) < world:  # too few for every process to take one: skipped by all alike
                continue
            index = index[rank::world]
            xb, yb = inputs[index].to(device), targets[index].to(device)
            optimizer.zero_grad()
            output = _forward(trained, xb, yb, takes_targets)
            loss = loss_fn(output, yb) + (_l2_penalty(model, train.l2) if train.l2 else 0.0)
            loss.backward()
            optimizer.step()
            totals += torch.tensor([loss.item() * len(xb), task.torch_metric(output, yb).sum().item(), len(xb)],
                                   dtype=torch.float64)
        if world > 1:
            dist.all_reduce(totals)
            for buffer in model.buffers():  # batch-norm statistics: rank 0's, as in the saved model
                dist.broadcast(buffer, src=0)
        total_loss, total_metric, seen = totals.tolist()
        val_loss, val_metric = _evaluate(model, task, loss_fn, x_val, y_val, device, rank, world)
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
    model.to("cpu").load_state_dict(best["weights"])
    if rank == 0:
        model_dir.mkdir(parents=True, exist_ok=True)
        torch.save(best["weights"], model_dir / MODEL_FILE)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return PredictionModel(model.eval(), task.torch_head(), task.output_names).eval()


def load(model_dir: Path, build: Callable[[], nn.Module], task: Task, train: Any = None,
         head: nn.Module | None = None) -> PredictionModel:
    """Rebuild the architecture and load the best checkpoint's weights (no pickle); ``head``: the
    project's prediction head for this model (a detector's decoding), else the task's."""
    model = build()
    model.load_state_dict(torch.load(model_dir / MODEL_FILE, weights_only=True))
    return PredictionModel(model.eval(), head if head is not None else task.torch_head(), task.output_names).eval()


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
    """Write a ``torch.export`` program (.pt2, unless the module sets ``exports_program = False``)
    and an ONNX graph, both with a dynamic batch axis (or the module's fixed ``export_batch``), taking raw inputs and giving outputs in original units when scalers are given; a frozen
    ``stem`` (its cached output is what the model takes) goes in front."""
    export_dir.mkdir(parents=True, exist_ok=True)
    wrapped = input_scaler or output_scaler or stem is not None
    exported = RawInputOutput(model, input_scaler, output_scaler, stem).eval() if wrapped else model
    native, onnx_path = export_dir / "model.pt2", export_dir / "model.onnx"
    # A module that loops over the images of a batch (torchvision's detectors) traces into a graph
    # of one batch size: it says which (``export_batch``), and both exports keep that size.
    fixed_batch = getattr(model.model, "export_batch", None)
    example = (as_tensor(sample[:fixed_batch or 2]),)
    dynamic_shapes = None if fixed_batch else {"x": {0: torch.export.Dim("batch")}}
    files = {"onnx": onnx_path}
    # torch.export refuses outputs whose size depends on the data in ways it cannot bound (the boxes
    # NMS keeps in torchvision's detectors): such a module says so, and its ONNX graph is its export.
    if getattr(model.model, "exports_program", True):
        with warnings.catch_warnings():  # nn.GRU/LSTM re-assign their flat weights while traced: harmless
            warnings.filterwarnings("ignore", message=r"The tensor attributes .* were assigned during export")
            program = torch.export.export(exported, example, dynamic_shapes=dynamic_shapes)
        for node in program.graph.nodes:  # source stack traces name this checkout's absolute paths:
            node.meta.pop("stack_trace", None)  # without them a clone elsewhere exports the same bytes
        torch.export.save(program, native)
        files = {"native": native, **files}
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
        torch.onnx.export(exported, example, onnx_path, dynamo=False, input_names=["x"], output_names=output_names,
                          dynamic_axes=None if fixed_batch else {name: {0: "batch"} for name in ["x", *output_names]})
    return files
