"""A real Prefect server on loopback and workers on its process work pool, for the deployment tests.

``prefect server start`` runs from a fresh PREFECT_HOME (its own SQLite database) on 127.0.0.1 and a
free port; workers are ``python -m pipeline worker`` in a clone, as the README starts them. Each is
its own process group, stopped by PID at the end (SIGTERM, then SIGKILL), so nothing outlives a test.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Iterator

import httpx

from tests.postgres import free_port
from tests.smoke import BIN_DIR

STARTUP_TIMEOUT_S = 180


def prefect_env(api_url: str, home: Path) -> dict[str, str]:
    """The environment of every process that talks to the server (CLI, workers, flow runs)."""
    return {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home),
            "PATH": f"{BIN_DIR}{os.pathsep}{os.environ['PATH']}", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_CLI_PROMPT": "false", "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_WORKER_QUERY_SECONDS": "1"}  # workers poll every second, not every 10: tests wait less


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a process and everything it started (its process group), by PID."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_for_health(api_url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{api_url}/health", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"prefect server not healthy after {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[dict[str, str]]:
    """``prefect server start`` in ``home``; yields the environment that points at it."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = prefect_env(api_url, home)
    log = home / "server.log"
    with open(log, "w") as output:
        process = subprocess.Popen([str(BIN_DIR / "prefect"), "server", "start", "--host", "127.0.0.1",
                                    "--port", str(port)], env={**env, "PREFECT_UI_ENABLED": "false"},
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_health(api_url, process, log)
        yield env
    finally:
        stop(process)


def prefect(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    """Run the ``prefect`` CLI against the server; its output, or an error with it."""
    result = subprocess.run([str(BIN_DIR / "prefect"), *args], env=env, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"prefect {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


@contextlib.contextmanager
def worker(env: dict[str, str], clone: Path, name: str, log: Path, *options: str) -> Iterator[subprocess.Popen]:
    """``python -m pipeline worker`` in ``clone`` (the README's command), stopped by PID afterwards."""
    output: IO[str]
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "pipeline", "--repo", str(clone), "worker", "--name", name,
                                    *options], cwd=clone, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process
    finally:
        stop(process)
