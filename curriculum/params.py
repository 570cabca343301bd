"""Reading ``params.yaml``: one section per project, as DVC sees it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load_project_params(params_path: str | Path, project: str) -> dict[str, Any]:
    """Return the project's section of ``params.yaml`` (the keys ``dvc.yaml`` declares per stage)."""
    params = yaml.safe_load(Path(params_path).read_text())
    try:
        return params[project]
    except KeyError:
        raise KeyError(f"{params_path} has no section for project {project!r}") from None
