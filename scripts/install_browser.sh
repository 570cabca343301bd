#!/bin/sh
# Headless Chromium for tests/test_plots_page.py, from Debian's archive: nothing to do if it is
# already installed, else apt-get (through sudo when not root).
set -eu

if [ -x /usr/bin/chromium ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1; then
    as_root="sudo"
else
    echo "install_browser.sh: chromium is missing and installing it needs root (no sudo found)" >&2
    exit 1
fi

$as_root apt-get update
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
