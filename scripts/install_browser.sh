#!/bin/sh
# Headless Chromium for tests/test_plots_page.py, from Debian's archive (see install_debian.sh).
set -eu
exec sh "$(dirname "$0")/install_debian.sh" chromium /usr/bin/chromium chromium
