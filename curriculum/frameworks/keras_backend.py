"""Keras 3 (TensorFlow back end): compile, fit with the curriculum's callbacks, export."""
from __future__ import annotations

import os
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pathlib import Path
from typing import Any, Callable, Mapping

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from curriculum.layout import ProcessedData
from curriculum.tasks.base import Predictions, Task

MODEL_FILE = "model.keras"


def set_threads(threads: int | None) -> None:
    """Cap TensorFlow's intra- and inter-op thread pools (before any op runs)."""
    if threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TF ops deterministic, so reruns match."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class _PrintEvery(keras.callbacks.Callback):
    """One line of the epoch's logs every ``every`` epochs (instead of Keras' per-epoch progress bar)."""

    def __init__(self, every: int):
        super().__init__()
        self.every = every

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        if (epoch + 1) % self.every == 0:
            values = " ".join(f"{name} {float(value):.4g}" for name, value in (logs or {}).items())
            print(f"epoch {epoch + 1}: {values}", flush=True)


def fit(model: keras.Model, data: ProcessedData, task: Task, train: Any, seed: int, model_dir: Path, live: Live) -> Loaded:
    """Train with Adam; keep the best epoch by validation loss (checkpoint) and return it.

    The task gives the loss, the metrics, the targets and any per-example weights; the
    validation loss is weighted the same way, so the best checkpoint is chosen on the same
    loss as in the torch loop.
    """
    model.compile(optimizer=keras.optimizers.Adam(train.learning_rate), **task.keras_compile(train))
    checkpoint = model_dir / MODEL_FILE
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss", save_best_only=True),
        DVCLiveCallback(live=live),
        _PrintEvery(train.log_every),
    ]
    if train.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=train.early_stopping.patience))
    if train.reduce_lr:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=train.reduce_lr.factor, patience=train.reduce_lr.patience,
            min_lr=train.reduce_lr.min_lr,
        ))
    train_split, val_split = data.split("train"), data.split("val")
    x_train, y_train = task.inputs(train_split), task.targets(train_split)
    validation_data = (task.inputs(val_split), task.keras_targets(task.targets(val_split)))
    val_weights = task.sample_weights(task.targets(val_split), train)
    if val_weights is not None:
        validation_data += (val_weights,)
    model.fit(
        x_train,
        task.keras_targets(y_train),
        sample_weight=task.sample_weights(y_train, train),
        validation_data=validation_data,
        epochs=train.epochs,
        batch_size=train.batch_size or len(x_train),
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    return load(model_dir, build=None, task=task, train=train)


@dataclass(frozen=True)
class Loaded:
    """A trained Keras model and the names the task gives its outputs."""

    model: keras.Model
    output_names: tuple[str, ...]


def load(model_dir: Path, build: Callable[[], keras.Model] | None, task: Task, train: Any = None) -> Loaded:
    """Load the best checkpoint (``build`` is unused: the .keras file holds the architecture)."""
    return Loaded(keras.models.load_model(model_dir / MODEL_FILE), task.output_names)


def predict(loaded: Loaded, x: np.ndarray) -> Predictions:
    outputs = loaded.model.predict(x, batch_size=1024, verbose=0)
    if isinstance(outputs, dict):
        return outputs
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return dict(zip(loaded.output_names, outputs, strict=True))


def export(
    loaded: Loaded, export_dir: Path, sample: np.ndarray,
    input_scaler: dict | None = None, output_scaler: dict | None = None,
) -> dict[str, Path]:
    """Write the native ``.keras`` file and an ONNX graph (via tf2onnx) with a dynamic batch axis.

    With scalers, both take raw inputs and give outputs in original units: Rescaling layers
    ``x * (1 / scale) + (-mean / scale)`` in front and ``y * scale + mean`` behind (Keras'
    Normalization layer with fixed statistics holds them as captured tensors, which tf2onnx turns
    into extra graph inputs).
    """
    export_dir.mkdir(parents=True, exist_ok=True)
    model = loaded.model
    if input_scaler is not None or output_scaler is not None:
        layers = [keras.Input(shape=sample.shape[1:], dtype=str(sample.dtype))]
        if input_scaler is not None:
            mean = np.asarray(input_scaler["mean"], dtype="float32")
            scale = np.asarray(input_scaler["scale"], dtype="float32")
            layers.append(keras.layers.Rescaling(scale=1.0 / scale, offset=-mean / scale))
        layers.append(model)
        if output_scaler is not None:
            layers.append(keras.layers.Rescaling(
                scale=np.asarray(output_scaler["scale"], dtype="float32"),
                offset=np.asarray(output_scaler["mean"], dtype="float32")))
        model = keras.Sequential(layers, name=f"{model.name}_raw_input")
    native, onnx_path = export_dir / MODEL_FILE, export_dir / "model.onnx"
    model.save(native)
    model.predict(sample[:1], verbose=0)  # ONNX export needs a built, called model
    model.export(onnx_path, format="onnx", verbose=False)
    return {"native": native, "onnx": onnx_path}
