"""Check every project's params before ``dvc repro`` runs anything.

Each stage checks its own project's params at start, but by then DVC has already removed the
stage's previous outputs. Run first (``make run`` and the flows do), this check stops a bad
param while every previous result is still in place.
"""
from __future__ import annotations

from pathlib import Path

from curriculum.config import ConfigError
from curriculum.projects import get_project, project_names


def params_problems(params_path: Path, projects: list[str] | None = None) -> list[str]:
    """One line per bad key, over the given projects (default: every project module)."""
    problems = []
    for name in projects or project_names():
        try:
            get_project(name).load_config(params_path)
        except ConfigError as error:
            problems.extend(str(error).splitlines())
    return problems


def check_params(params_path: Path, projects: list[str] | None = None) -> None:
    """Raise :class:`ConfigError` naming every bad key of the given projects."""
    problems = params_problems(params_path, projects)
    if problems:
        raise ConfigError(f"bad params in {params_path} (nothing was run):\n" + "\n".join(problems))
