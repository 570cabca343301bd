"""Loading a trained model back with everything evaluate and export need to use it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from curriculum.frameworks import get_backend
from curriculum.io import read_json, write_json
from curriculum.projects import get_project

META_FILE = "meta.json"


@dataclass(frozen=True)
class TrainedModel:
    model: Any
    backend: ModuleType
    meta: dict[str, Any]


def write_meta(model_dir: Path, **meta: Any) -> None:
    """Record what rebuilding the model takes (project, framework, shapes, train params)."""
    write_json(model_dir / META_FILE, meta)


def load_trained(model_dir: Path) -> TrainedModel:
    meta = read_json(model_dir / META_FILE)
    project = get_project(meta["project"])
    backend = get_backend(meta["framework"])
    builder = project.model_builder(meta["framework"])

    def build() -> Any:
        return builder(tuple(meta["input_shape"]), meta["n_outputs"], meta["train_params"])

    return TrainedModel(backend.load(model_dir, build, project.task), backend, meta)
