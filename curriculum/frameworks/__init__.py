"""Framework back ends with one interface, so the stages never branch on the framework.

Each back end module provides ``seed_everything``, ``fit``, ``load``, ``predict_proba``
and ``export`` (native format + ONNX, both taking NHWC/feature-row input and returning
probabilities).
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
