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
    x_train = splits["x_train"]
    model.fit(
        x_train,
        _targets(splits["y_train"], task),
        validation_data=(splits["x_val"], _targets(splits["y_val"], task)),
        epochs=train_params["epochs"],
        batch_size=train_params["batch_size"] or len(x_train),
        shuffle=True,
        callbacks=callbacks,
        verbose=train_params.get("verbose", 1),
    )
    return load(model_dir, build=None, task=task)


def load(model_dir: Path, build: Callable[[], keras.Model] | None, task: str) -> keras.Model:
    """Load the best checkpoint (``build`` and ``task`` are unused: the .keras file holds both)."""
    return keras.models.load_model(model_dir / MODEL_FILE)


def predict_proba(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return model.predict(x, batch_size=1024, verbose=0)


def export(model: keras.Model, export_dir: Path, sample: np.ndarray) -> dict[str, Path]:
    """Write the native ``.keras`` file and an ONNX graph (via tf2onnx) with a dynamic batch axis."""
    export_dir.mkdir(parents=True, exist_ok=True)
    native, onnx_path = export_dir / MODEL_FILE, export_dir / "model.onnx"
    model.save(native)
    model.predict(sample[:1], verbose=0)  # ONNX export needs a built, called model
    model.export(onnx_path, format="onnx", verbose=False)
    return {"native": native, "onnx": onnx_path}
