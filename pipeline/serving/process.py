"""``python -m pipeline serve-models`` as a child process on a free loopback port, for the
benchmark and the tests: started, waited for until ``/ready``, stopped with SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """The server on ``repo`` with extra CLI arguments; its log goes to ``log_path``."""

    def __init__(self, repo: Path, *args: str, log_path: Path, ready_timeout: float = 180.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "--repo", str(repo), "serve-models", "--port", str(self.port), *args],
            cwd=PACKAGE_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.log()}")
            try:
                if self.get("/ready")["ready"]:
                    return
            except (OSError, urllib.error.HTTPError):  # not listening yet, or 503 while loading
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"the server was not ready after {ready_timeout:.0f} s:\n{self.log()}")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def log(self) -> str:
        """What the server printed so far (the child writes the file itself)."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (uvicorn's graceful shutdown), then wait; the exit code. Killed if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
