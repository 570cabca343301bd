"""Keras 3 (TensorFlow back end): compile, fit with the curriculum's callbacks, export."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pathlib import Path
from typing import Any, Callable, Mapping

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

MODEL_FILE = "model.keras"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TF ops deterministic, so reruns match."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _targets(y: np.ndarray, task: str) -> np.ndarray:
    return y.astype("float32").reshape(-1, 1) if task == "binary" else y


class _PrintEvery(keras.callbacks.Callback):
    """One line of the epoch's logs every ``every`` epochs (instead of Keras' per-epoch progress bar)."""

    def __init__(self, every: int):
        super().__init__()
        self.every = every

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        if (epoch + 1) % self.every == 0:
            values = " ".join(f"{name} {float(value):.4g}" for name, value in (logs or {}).items())
            print(f"epoch {epoch + 1}: {values}", flush=True)


def fit(
    model: keras.Model,
    splits: Mapping[str, np.ndarray],
    task: str,
    train_params: Mapping[str, Any],
    seed: int,
    model_dir: Path,
    live: Live,
) -> keras.Model:
    """Train with Adam; keep the best epoch by validation loss (checkpoint) and return it."""
    model.compile(
        optimizer=keras.optimizers.Adam(train_params["learning_rate"]),
        loss="binary_crossentropy" if task == "binary" else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    checkpoint = model_dir / MODEL_FILE
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss", save_best_only=True),
        DVCLiveCallback(live=live),
    ]
    if train_params.get("early_stopping"):
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=train_params["early_stopping"]["patience"]))
    if train_params.get("reduce_lr"):
        settings = train_params["reduce_lr"]
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=settings["factor"], patience=settings["patience"], min_lr=settings["min_lr"]
        ))
    log_every = train_params.get("log_every")
    if log_every:
        callbacks.append(_PrintEvery(log_every))
    # pos_weight (binary only) weights the positive examples' loss, as torch's BCEWithLogitsLoss(pos_weight=...);
    # the validation loss is weighted the same way, so the best checkpoint is chosen on the same loss as in torch.
    pos_weight = train_params.get("pos_weight") if task == "binary" else None
    class_weight = {0: 1.0, 1: float(pos_weight)} if pos_weight else None
    validation_data = (splits["x_val"], _targets(splits["y_val"], task))
    if class_weight:
        validation_data += (np.where(splits["y_val"] == 1, class_weight[1], 1.0).astype("float32"),)
    x_train = splits["x_train"]
    model.fit(
        x_train,
        _targets(splits["y_train"], task),
        validation_data=validation_data,
        epochs=train_params["epochs"],
        batch_size=train_params["batch_size"] or len(x_train),
        shuffle=True,
        class_weight=class_weight,
        callbacks=callbacks,
        verbose=train_params.get("verbose", 0 if log_every else 1),
    )
    return load(model_dir, build=None, task=task)


def load(model_dir: Path, build: Callable[[], keras.Model] | None, task: str) -> keras.Model:
    """Load the best checkpoint (``build`` and ``task`` are unused: the .keras file holds both)."""
    return keras.models.load_model(model_dir / MODEL_FILE)


def predict_proba(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return model.predict(x, batch_size=1024, verbose=0)


def export(
    model: keras.Model, export_dir: Path, sample: np.ndarray, normaliser: Mapping[str, np.ndarray] | None = None
) -> dict[str, Path]:
    """Write the native ``.keras`` file and an ONNX graph (via tf2onnx) with a dynamic batch axis.

    With a ``normaliser`` (``mean``/``scale`` fitted in preprocessing) both put the standardiser in
    front of the model, so they take raw rows; ``sample`` is then raw rows too. It is a Rescaling
    layer, ``x * (1 / scale) + (-mean / scale)``: Keras' Normalization layer with fixed mean and
    variance holds them as captured tensors, which tf2onnx turns into extra graph inputs.
    """
    export_dir.mkdir(parents=True, exist_ok=True)
    if normaliser is not None:
        mean = np.asarray(normaliser["mean"], dtype="float32")
        scale = np.asarray(normaliser["scale"], dtype="float32")
        model = keras.Sequential(
            [keras.Input(shape=mean.shape), keras.layers.Rescaling(scale=1.0 / scale, offset=-mean / scale), model],
            name=f"{model.name}_raw_input",
        )
    native, onnx_path = export_dir / MODEL_FILE, export_dir / "model.onnx"
    model.save(native)
    model.predict(sample[:1], verbose=0)  # ONNX export needs a built, called model
    model.export(onnx_path, format="onnx", verbose=False)
    return {"native": native, "onnx": onnx_path}
