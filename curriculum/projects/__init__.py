"""The curriculum's projects: each is a module (or package) here defining ``PROJECT``, named as
its section in ``params.yaml``. Nothing else lists them: stages find a project by its name."""
from __future__ import annotations

import importlib
import pkgutil

from curriculum.projects.base import Project

NOT_PROJECTS = {"base"}


def project_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in NOT_PROJECTS)


def get_project(name: str) -> Project:
    """Import the project's module lazily, so a stage loads only the framework it uses."""
    if name not in project_names():
        raise KeyError(f"unknown project {name!r}; projects are {', '.join(project_names())}")
    return importlib.import_module(f"{__name__}.{name}").PROJECT
