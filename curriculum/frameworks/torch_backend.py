"""Native PyTorch: a plain training loop with the same callbacks as Keras, and export."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from dvclive import Live
from torch import nn
from tqdm import tqdm

from curriculum.frameworks.epochs import EpochEnd

MODEL_FILE = "model.pt"


def seed_everything(seed: int) -> None:
    """Seed every generator and forbid non-deterministic kernels, so reruns match bit for bit."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


class ProbabilityModel(nn.Module):
    """Wraps a logits model to take the pipeline's layout (NHWC images or feature rows) and
    return probabilities, so the exported graph is used exactly like the Keras one."""

    def __init__(self, logits_model: nn.Module, task: str):
        super().__init__()
        self.logits_model = logits_model
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.permute(0, 3, 1, 2)
        logits = self.logits_model(x)
        return torch.sigmoid(logits) if self.task == "binary" else torch.softmax(logits, dim=1)


def _as_input(x: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return tensor.permute(0, 3, 1, 2).contiguous() if tensor.dim() == 4 else tensor


def _l2_penalty(model: nn.Module, l2: float) -> torch.Tensor:
    """Keras' kernel_regularizer: l2 * sum(w^2) over conv and dense kernels (not biases, not BN)."""
    kernels = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return l2 * sum((w ** 2).sum() for w in kernels)


def _as_targets(y: np.ndarray, binary: bool) -> torch.Tensor:
    """Float column targets for BCE, integer class indices for cross-entropy."""
    return torch.as_tensor(y, dtype=torch.float32).reshape(-1, 1) if binary else torch.as_tensor(y, dtype=torch.int64)


def _predicted(logits: torch.Tensor, binary: bool) -> torch.Tensor:
    return (logits > 0).float() if binary else logits.argmax(dim=1)


def _evaluate(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, binary: bool) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x)
        return loss_fn(logits, y).item(), (_predicted(logits, binary) == y).float().mean().item()


def fit(
    model: nn.Module,
    splits: Mapping[str, np.ndarray],
    task: str,
    train_params: Mapping[str, Any],
    seed: int,
    model_dir: Path,
    live: Live,
) -> nn.Module:
    """Adam + early stopping, best checkpoint and reduce-LR-on-plateau, all on validation loss."""
    binary = task == "binary"
    x_train, x_val = _as_input(splits["x_train"]), _as_input(splits["x_val"])
    y_train, y_val = _as_targets(splits["y_train"], binary), _as_targets(splits["y_val"], binary)
    pos_weight = train_params.get("pos_weight")
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight) if pos_weight else None) if binary else nn.CrossEntropyLoss()
    # Shuffled mini-batches by slicing a seeded permutation: measured faster here than a
    # DataLoader over a TensorDataset, which indexes and re-stacks every example (bench/).
    batch_size = train_params["batch_size"] or len(x_train)
    shuffle = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_params["learning_rate"])
    reduce_lr = train_params.get("reduce_lr")
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=reduce_lr["factor"], patience=reduce_lr["patience"], min_lr=reduce_lr["min_lr"]
    ) if reduce_lr else None
    checkpoint = model_dir / MODEL_FILE
    end_epoch = EpochEnd(live, train_params, save_checkpoint=lambda: torch.save(model.state_dict(), checkpoint))
    l2 = train_params["l2"]

    for epoch in range(1, train_params["epochs"] + 1):
        model.train()
        total_loss, total_correct, seen = 0.0, 0.0, 0
        order = torch.randperm(len(x_train), generator=shuffle)
        starts = tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch}/{train_params['epochs']}",
                      unit="batch", leave=False)
        for start in starts:
            index = order[start:start + batch_size]
            xb, yb = x_train[index], y_train[index]
            optimizer.zero_grad()
            logits = model(xb)
            loss = loss_fn(logits, yb) + (_l2_penalty(model, l2) if l2 else 0.0)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(xb)
            total_correct += (_predicted(logits, binary) == yb).sum().item()
            seen += len(xb)
        val_loss, val_accuracy = _evaluate(model, loss_fn, x_val, y_val, binary)
        learning_rate = optimizer.param_groups[0]["lr"]
        if end_epoch(epoch, total_loss / seen, total_correct / seen, val_loss, val_accuracy, learning_rate):
            break
        if scheduler is not None:
            scheduler.step(val_loss)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    return ProbabilityModel(model.eval(), task).eval()


def load(model_dir: Path, build: Callable[[], nn.Module], task: str) -> nn.Module:
    """Rebuild the architecture and load the best checkpoint's weights (no pickle)."""
    model = build()
    model.load_state_dict(torch.load(model_dir / MODEL_FILE, weights_only=True))
    return ProbabilityModel(model.eval(), task).eval()


def predict_proba(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    with torch.no_grad():
        batches = [model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)))
                   for i in range(0, len(x), batch_size)]
    return torch.cat(batches).numpy()


class StandardisedInput(nn.Module):
    """Folds a standardiser into the graph: ``model((x - mean) / scale)``, so raw rows go in."""

    def __init__(self, model: nn.Module, mean: np.ndarray, scale: np.ndarray):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.scale)


def export(
    model: nn.Module, export_dir: Path, sample: np.ndarray, normaliser: Mapping[str, np.ndarray] | None = None
) -> dict[str, Path]:
    """Write a ``torch.export`` program (.pt2) and an ONNX graph, both with a dynamic batch axis.

    With a ``normaliser`` (``mean``/``scale`` fitted in preprocessing) both take raw rows and
    standardise them as their first op; ``sample`` is then raw rows too.
    """
    export_dir.mkdir(parents=True, exist_ok=True)
    if normaliser is not None:
        model = StandardisedInput(model, normaliser["mean"], normaliser["scale"]).eval()
    native, onnx_path = export_dir / "model.pt2", export_dir / "model.onnx"
    example = (torch.from_numpy(np.ascontiguousarray(sample[:2], dtype=np.float32)),)
    dynamic_shapes = {"x": {0: torch.export.Dim("batch")}}
    torch.export.save(torch.export.export(model, example, dynamic_shapes=dynamic_shapes), native)
    torch.onnx.export(model, example, onnx_path, dynamo=True, dynamic_shapes=dynamic_shapes, verbose=False)
    return {"native": native, "onnx": onnx_path}
