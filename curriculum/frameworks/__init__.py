"""Framework back ends with one interface, so the stages never branch on the framework.

Each back end module provides ``set_threads``, ``seed_everything``, ``fit(model, data, task, train, seed,
model_dir, live)``, ``load(model_dir, build, task)``, ``predict(model, x) -> {name: array}`` and
``export(model, export_dir, sample, input_scaler, output_scaler)`` (native format + ONNX); a back
end that trains in several processes also has ``launch(processes, module, arguments)`` (PyTorch:
torchrun). What
the model learns and predicts comes from the project's task, never from a branch here.
"""
from __future__ import annotations

import importlib
import os
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


def launched_rank() -> int | None:
    """This process's rank when a multi-process launcher started it (torchrun's WORLD_SIZE > 1 and
    RANK), else None: rank 0 logs, checkpoints and writes the model; the others only train."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return int(os.environ["RANK"])
