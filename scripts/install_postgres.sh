#!/bin/sh
# PostgreSQL server for tests/test_tune.py (an Optuna study with two writers), from Debian's
# archive (see install_debian.sh). The tests start their own throw-away server on loopback and
# stop it (tests/postgres.py).
set -eu
exec sh "$(dirname "$0")/install_debian.sh" "the PostgreSQL server" '/usr/lib/postgresql/*/bin/pg_ctl' \
    --no-install-recommends postgresql
