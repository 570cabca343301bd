"""Loading a trained model back with everything evaluate and export need to use it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

from curriculum.frameworks import get_backend
from curriculum.layout import read_model_meta
from curriculum.projects import get_project
from curriculum.projects.base import Project


@dataclass(frozen=True)
class TrainedModel:
    model: Any
    backend: ModuleType
    project: Project
    meta: dict[str, Any]


def model_meta(project: str, variant: str, framework: str, model: str, spec: dict[str, Any], train: Any) -> dict[str, Any]:
    """What rebuilding the model takes: its project, variant, architecture, data spec and the
    train params that shape it (display-only ones left out, so they never change the model's hash)."""
    return {"project": project, "variant": variant, "framework": framework, "model": model,
            "spec": spec, "train": train.identity()}


def load_trained(model_dir: Path, fitted: Mapping[str, Any]) -> TrainedModel:
    """The trained model in ``model_dir``; ``fitted``: the preprocess's fitted artifacts (a
    pretrained model's builder starts from one of them before its trained weights are loaded)."""
    meta = read_model_meta(model_dir)
    project = get_project(meta["project"])
    backend = get_backend(meta["framework"])
    train = project.config.model_fields["train"].annotation.from_identity(meta["train"])
    backend.set_threads(train.threads)  # score and export with the threads the model trained with

    def build() -> Any:
        return project.build_model(meta["model"], meta["framework"], meta["spec"], train, fitted)

    head = project.head(meta["model"], meta["framework"], meta["spec"], train)
    return TrainedModel(backend.load(model_dir, build, project.task, train=train, head=head), backend, project, meta)
