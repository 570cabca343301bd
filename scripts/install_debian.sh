#!/bin/sh
# Install a Debian package the tests need, unless it is already there:
#   install_debian.sh WHAT PRESENT [apt-get install arguments...]
# WHAT names it in the error; PRESENT is a path (a glob is allowed) that exists once it is
# installed. apt-get runs through sudo when not root.
set -eu

what=$1 present=$2
shift 2

# shellcheck disable=SC2086  # PRESENT is expanded on purpose: it may be a glob
if ls $present >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1; then
    as_root="sudo"
else
    echo "$(basename "$0"): $what is missing and installing it needs root (no sudo found)" >&2
    exit 1
fi

$as_root apt-get update
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
