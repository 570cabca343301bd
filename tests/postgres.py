"""A throw-away PostgreSQL server on loopback, from Debian's packages (``scripts/install_postgres.sh``),
for the tests of Optuna studies with several writers.

The server runs from a fresh temporary directory (its data, socket and log) with trust
authentication on 127.0.0.1 and a free port, and is stopped (``pg_ctl stop -m fast``) and removed
afterwards. PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user the
package creates (the directory is made under the system's temporary directory, which that user
can reach, not under pytest's, which it cannot).
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

DATABASE = "studies"
USER = "tune"


def server_bin_dir() -> Path:
    """The newest installed server's programs (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError("no PostgreSQL server is installed: run `sh scripts/install_postgres.sh` "
                           "(Debian's postgresql package), as `make test` does")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yield the SQLAlchemy URL of its database."""
    bin_dir = server_bin_dir()
    with tempfile.TemporaryDirectory(prefix="dlc-postgres-") as temporary:
        directory = Path(temporary)
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        with _running(bin_dir, directory) as url:
            yield url


@contextlib.contextmanager
def _running(bin_dir: Path, directory: Path) -> Iterator[str]:
    data, port = directory / "data", free_port()
    run = lambda *args: subprocess.run(_as_server_user([str(bin_dir / args[0]), *args[1:]]), check=True,  # noqa: E731
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run("initdb", "--pgdata", str(data), "--auth", "trust", "--username", USER, "--encoding", "UTF8")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} -c fsync=off"
    run("pg_ctl", "--pgdata", str(data), "--options", options, "--log", str(directory / "server.log"),
        "--wait", "start")
    try:
        run("createdb", "--host", "127.0.0.1", "--port", str(port), "--username", USER, DATABASE)
        yield f"postgresql+psycopg2://{USER}@127.0.0.1:{port}/{DATABASE}"
    finally:
        run("pg_ctl", "--pgdata", str(data), "--mode", "fast", "--wait", "stop")
