"""The flow under failure: which stage failures are retried, what a failed flow says, concurrent
CLI runs, and one task-concurrency default.

The repositories here are smoke copies trimmed to their ``download`` stages (nothing is built),
and image_classification's full-MNIST source is pointed at generated IDX files on a local HTTP
server (or at an unresolvable host), so each flow runs the real download stage through the real
``dvc repro`` in seconds.
"""
from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.flows import load_flow_from_entrypoint
from prefect.logging.handlers import APILogWorker

from pipeline import dvc_bridge, flows
from pipeline.deployments import build_deployments
from pipeline.flows import project_flow
from tests.smoke import REPO_ROOT, build_smoke_repo
from tests.test_download import server  # noqa: F401 -- the local HTTP server fixture

IC = "image_classification"
STAGE = f"download@{IC}"
MNIST_KEYS = {"x": (20, 28, 28), "y": (20,), "x_test": (10, 28, 28), "y_test": (10,)}


def _idx_gz(array: np.ndarray) -> bytes:
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def mnist_files() -> dict[str, bytes]:
    """Small IDX files in MNIST's layout (random pixels, every digit twice in train)."""
    rng = np.random.default_rng(0)
    arrays = {"x": rng.integers(0, 256, MNIST_KEYS["x"]), "y": np.arange(20) % 10,
              "x_test": rng.integers(0, 256, MNIST_KEYS["x_test"]), "y_test": np.arange(10)}
    return {f"/{key}.gz": _idx_gz(array) for key, array in arrays.items()}


def download_repo(root: Path, base_url: str | None = None) -> Path:
    """A smoke copy with only the download stages; with ``base_url``, image_classification
    downloads full MNIST from ``<base_url>/<key>.gz``, pinned to :func:`mnist_files`' md5s."""
    build_smoke_repo(root)
    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text())
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"download": dvc_yaml["stages"]["download"]}}))
    if base_url is not None:
        params = yaml.safe_load((root / "params.yaml").read_text())
        params[IC]["download"]["source"] = "mnist"
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        pins = {key: hashlib.md5(body).hexdigest() for key, body in mnist_files().items()}
        entries = "".join(
            f'    "{path[1:-3]}": RemoteFile("{base_url}{path}", "{path[1:]}", md5="{md5}"),\n'
            for path, md5 in pins.items()
        )
        with open(root / "curriculum/projects/image_classification.py", "a") as module:
            module.write(f"\n\n# tests: full MNIST from a local server\nMNIST_FILES = {{\n{entries}}}\n")
    return root


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(flows, "RETRY_BACKOFF_SECONDS", 0.1)


async def _task_runs(flow_run_id):
    async with get_client() as client:
        return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def flow_run_log(flow_run_id) -> str:
    """Every log line the flow run sent to the API (the stage's output among them)."""
    APILogWorker.drain_all(timeout=10)

    async def read():
        async with get_client() as client:
            return await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))

    return "\n".join(log.message for log in asyncio.run(read()))


def run_download_flow(repo: Path):
    """Run image_classification's flow; return (flow state, the download task run, seconds)."""
    start = time.monotonic()
    state = project_flow(project=IC, repo_root=str(repo), return_state=True)
    seconds = time.monotonic() - start
    (task_run,) = [t for t in asyncio.run(_task_runs(state.state_details.flow_run_id)) if t.name.startswith(STAGE)]
    return state, task_run, seconds


def _failure(state) -> str:
    error = state.result(raise_on_failure=False)
    assert isinstance(error, BaseException), error
    return str(error)


# --- 1. only transient failures are retried ------------------------------------------------


@pytest.mark.parametrize("case", ["http-404", "checksum", "unresolvable-host"])
def test_permanent_download_failure_is_not_retried(prefect_api, fast_retries, server, tmp_path, case):
    files = mnist_files()
    server.files.update(files)
    if case == "http-404":
        del server.files["/x.gz"]
    elif case == "checksum":
        server.files["/x.gz"] = files["/x.gz"][:-1] + b"!"
    base_url = "http://nonexistent.invalid" if case == "unresolvable-host" else server.url
    repo = download_repo(tmp_path / "repo", base_url)

    state, task_run, seconds = run_download_flow(repo)

    assert state.is_failed()
    assert task_run.run_count == 1, f"a permanent failure ({case}) was retried"
    message = _failure(state)
    assert f"{STAGE} failed" in message and "its command exited with 1" in message
    assert {"http-404": "/x.gz: HTTP 404", "checksum": "md5 mismatch",
            "unresolvable-host": "cannot resolve the host name"}[case] in message
    if case != "unresolvable-host":
        assert [path for path, _ in server.requests].count("/x.gz") == 1
    assert seconds < 60


@pytest.mark.parametrize("answer", [503, "drop"], ids=["http-503", "dropped-connection"])
def test_transient_download_failure_is_retried_and_succeeds(prefect_api, fast_retries, server, tmp_path, answer):
    server.files.update(mnist_files())
    server.plans["/x_test.gz"] = [answer]  # x.gz and y.gz land first and are kept
    repo = download_repo(tmp_path / "repo", server.url)

    state, task_run, _ = run_download_flow(repo)

    assert state.is_completed(), _failure(state)
    assert task_run.run_count == 2
    log = flow_run_log(state.state_details.flow_run_id)
    assert f"{IC}: download failed (transient, worth retrying): {server.url}/x_test.gz" in log
    assert "its command exited with 75 (EX_TEMPFAIL: a transient failure)" in log  # why it was retried
    requested = [path for path, _ in server.requests]
    assert requested.count("/x_test.gz") == 2
    assert requested.count("/x.gz") == 1  # the retry found x.gz downloaded and verified
    assert (repo / f"data/{IC}/raw").is_dir()


def test_dvc_passes_the_transient_exit_code_on(server, tmp_path):
    """What the bridge sees: dvc exits 255 for any failed command, but names its exit code."""
    server.files.update(mnist_files())
    server.plans["/x.gz"] = [503]
    repo = download_repo(tmp_path / "repo", server.url)
    with pytest.raises(dvc_bridge.StageFailed) as excinfo:
        dvc_bridge.repro_stage(repo, STAGE, log=lambda line: None)
    failure = excinfo.value
    assert (failure.exit_code, failure.command_exit_code, failure.transient) == (255, 75, True)
    assert f"{IC}: download failed (transient, worth retrying): {server.url}/x.gz: HTTP 503" in str(failure)


# --- 2. the failing stage's own last lines in the flow's failure ---------------------------


def test_a_bad_param_fails_the_flow_before_any_stage_naming_the_key(prefect_api, tmp_path):
    """Params are checked before the first stage (DVC would remove the stage's outputs before
    the stage's own check). The stage's own last lines in a failure: see the permanent-failure
    tests above (HTTP 404, md5 mismatch, unresolvable host)."""
    repo = download_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[IC]["download"]["source"] = "nope"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    state = project_flow(project=IC, repo_root=str(repo), return_state=True)

    assert state.is_failed()
    message = _failure(state)
    assert "nothing was run" in message
    assert f"{IC}.download.source: 'nope' is not a source of this project" in message
    task_names = [t.name for t in asyncio.run(_task_runs(state.state_details.flow_run_id))]
    assert not [name for name in task_names if name.startswith(STAGE)], task_names


# --- 3. concurrent CLI runs, each with its own ephemeral API server ------------------------

# Loaded by every Python process of the test (PYTHONPATH): the first ephemeral Prefect server to
# start sleeps first, as a cold start on a loaded machine does -- past Prefect's default limit.
SLOW_SERVER_START = """\
import os, sys, time
if os.environ.get("PREFECT__SERVER_EPHEMERAL") == "1" and "uvicorn" in sys.orig_argv:
    try:
        os.close(os.open(os.environ["SLOW_START_MARKER"], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        pass
    else:
        time.sleep(float(os.environ["SLOW_START_SECONDS"]))
"""


@pytest.mark.slow  # 50 s; the deployments' real-server test (test_deployments.py) took its place in the default suite
def test_two_cli_runs_started_together_both_succeed(tmp_path):
    repo = download_repo(tmp_path / "repo")
    (tmp_path / "site").mkdir()
    (tmp_path / "site/sitecustomize.py").write_text(SLOW_SERVER_START)
    env = {key: value for key, value in os.environ.items()
           if key not in ("PREFECT_API_URL", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"),  # a fresh database: migrated on first start
               PYTHONPATH=str(tmp_path / "site"), SLOW_START_MARKER=str(tmp_path / "slow-start"),
               SLOW_START_SECONDS="21")  # Prefect's default limit is 20 s
    runs = {
        project: subprocess.Popen(
            [sys.executable, "-m", "pipeline", "--repo", str(repo), "run", project],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for project in (IC, "simple_nn")
    }
    outputs = {project: run.communicate(timeout=400)[0] for project, run in runs.items()}
    for project, run in runs.items():
        assert run.returncode == 0, f"{project}:\n{outputs[project][-4000:]}"
        assert "Timed out while attempting to connect" not in outputs[project]
        assert (repo / f"data/{project}/raw").is_dir()
    assert (tmp_path / "slow-start").exists()  # one server start was slowed down


def test_the_cli_starts_the_server_prefect_would(monkeypatch):
    """start_ephemeral_api launches Prefect's ephemeral server itself (before importing Prefect's
    server code): the very command and environment of ``SubprocessASGIServer``."""
    from types import SimpleNamespace

    from prefect.server.api import server

    launched = {}
    monkeypatch.setattr(server.subprocess, "Popen", lambda args, env: launched.update(args=args, env=env))
    server.SubprocessASGIServer._run_uvicorn_command(SimpleNamespace(port=4321))
    assert flows.api_server_command(4321) == (launched["args"], launched["env"])


# --- 4. one default for task concurrency ---------------------------------------------------


def test_deployments_and_cli_run_stages_with_the_same_task_runner():
    from pipeline.__main__ import build_parser

    args = build_parser().parse_args(["run", IC])
    assert args.workers == flows.DEFAULT_WORKERS
    cli_runner = project_flow.with_options(task_runner=flows.task_runner(args.workers)).task_runner
    for deployment in build_deployments(REPO_ROOT):
        deployed = load_flow_from_entrypoint(str(REPO_ROOT / deployment.entrypoint))
        assert type(deployed.task_runner) is type(cli_runner)
        assert deployed.task_runner._max_workers == cli_runner._max_workers == flows.DEFAULT_WORKERS
    entrypoints = {spec["entrypoint"] for spec in yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]}
    assert entrypoints == {"pipeline/flows.py:project_flow"}
