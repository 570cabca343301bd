"""Framework back ends with one interface, so the stages never branch on the framework.

Each back end module provides ``set_threads``, ``seed_everything``, ``fit(model, data, task, train, seed,
model_dir, live)``, ``load(model_dir, build, task)``, ``predict(model, x) -> {name: array}`` and
``export(model, export_dir, sample, input_scaler, output_scaler)`` (native format + ONNX). What
the model learns and predicts comes from the project's task, never from a branch here.
"""
from __future__ import annotations

import importlib
from types import ModuleType

BACKENDS = {
    "keras": "curriculum.frameworks.keras_backend",
    "numpy": "curriculum.frameworks.numpy_backend",
    "torch": "curriculum.frameworks.torch_backend",
}


def get_backend(framework: str) -> ModuleType:
    try:
        return importlib.import_module(BACKENDS[framework])
    except KeyError:
        raise KeyError(f"unknown framework {framework!r}; known: {', '.join(sorted(BACKENDS))}") from None
