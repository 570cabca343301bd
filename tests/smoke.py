"""Tiny-slice copies of this repository for end-to-end tests of the real pipeline."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent

def smoke_params(params: dict) -> dict:
    """Every project's pipeline, shrunk by the overrides its module declares (``Project.smoke``)."""
    from curriculum.projects import get_project, project_names

    for project in project_names():
        for dotted, value in get_project(project).smoke.items():
            *path, key = dotted.split(".")
            section = params[project]
            for part in path:
                section = section[part]
            section[key] = value
    return params


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=tests@dl-curriculum", "-c", "user.name=tests", *args],
                   cwd=root, check=True, capture_output=True)


def build_smoke_repo(root: Path) -> Path:
    """Copy the repository's files (tracked and not ignored), shrink its params, commit."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file() and not name.startswith(("tests/", "bench/", "data/")):  # DVC rebuilds data/
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    params_path = root / "params.yaml"
    params_path.write_text(yaml.safe_dump(smoke_params(yaml.safe_load(params_path.read_text())), sort_keys=False))
    _git(root, "init", "-q")
    commit(root, "smoke copy")
    return root


def commit(root: Path, message: str) -> None:
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "--allow-empty", "-m", message)


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the venv's ``dvc`` in ``root`` (stage commands find the venv's ``python``)."""
    env = {**os.environ, "PATH": f"{BIN_DIR}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([str(BIN_DIR / "dvc"), *args], cwd=root, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def stages_run(output: str) -> list[str]:
    """The stages ``dvc repro`` actually ran, from its 'Running stage' lines."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]
