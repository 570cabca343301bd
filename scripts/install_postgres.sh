#!/bin/sh
# PostgreSQL server for tests/test_tune.py (an Optuna study with two writers), from Debian's
# archive: nothing to do if a server is already installed, else apt-get (through sudo when not root).
# The tests start their own throw-away server on loopback and stop it (tests/postgres.py).
set -eu

if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1; then
    as_root="sudo"
else
    echo "install_postgres.sh: the PostgreSQL server is missing and installing it needs root (no sudo found)" >&2
    exit 1
fi

$as_root apt-get update
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
