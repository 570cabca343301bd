"""The project registry: each curriculum project is one module defining a ``PROJECT``.

Stages look projects up by name, so adding a project is a new module here, a line in
``REGISTRY`` and its entry in ``params.yaml`` -- never an edit to ``stages/``.
"""
from __future__ import annotations

import importlib

from curriculum.projects.base import Project

REGISTRY = {
    "image_classification": "curriculum.projects.image_classification",
    "simple_nn": "curriculum.projects.simple_nn",
}


def get_project(name: str) -> Project:
    """Import the project's module lazily, so a stage loads only the framework it uses."""
    try:
        module_name = REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown project {name!r}; known projects: {', '.join(sorted(REGISTRY))}") from None
    return importlib.import_module(module_name).PROJECT
