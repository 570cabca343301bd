# The two entry points: `make run` (set up, then `dvc repro` the default projects) and
# `make test` (set up, then pytest). Both create .venv from pinned versions on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTEST_ARGS ?=

# Stage commands call `python`/`dvc`: make them the venv's. No telemetry, no TF chatter.
export PATH := $(BIN):$(PATH)
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TF_CPP_MIN_LOG_LEVEL := 3
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: setup run test test-slow flow tune serve bench bench-serve clean

setup: $(VENV)/.installed build/plots_page.html

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --constraint requirements.lock --editable '.[test]'
	touch $@

# The plots page's vega scripts (exact versions and hashes in web/package-lock.json), inlined into
# the page template that .dvc/config names for `dvc plots show/diff`.
web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	npm ci --prefix web --ignore-scripts --no-audit --no-fund

build/plots_page.html: $(VENV)/.installed web/node_modules/.package-lock.json web/plots_page.html pipeline/plots_page.py
	python -m pipeline plots template

# Params are checked before `dvc repro`, which removes a stage's outputs before running it.
run: setup
	python -m pipeline check-params
	dvc repro
	python -m pipeline summary

# pytest exits 5 when a selection collects no test: that is not a failure of the suite.
# The plots-page test opens the page in Debian's headless Chromium and the study tests start their
# own PostgreSQL server: both installed here from Debian's packages if missing.
test: setup
	sh scripts/install_browser.sh
	sh scripts/install_postgres.sh
	python -m pytest $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-slow: setup
	sh scripts/install_browser.sh
	sh scripts/install_postgres.sh
	python -m pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

PROJECT ?= image_classification
flow: setup
	python -m pipeline run $(PROJECT)

# An Optuna study over the project's `tune` params, every trial a DVC experiment (`dvc exp show`).
tune: setup
	python -m pipeline tune $(PROJECT)

# Every exported model behind one HTTP API (FastAPI on onnxruntime), its docs at /docs and a page to
# try them at /; it reloads a model when `dvc repro` exports a new one. SERVE_ARGS: e.g. --port 9000, --rev v1.
SERVE_ARGS ?=
serve: setup
	python -m pipeline serve-models $(SERVE_ARGS)

bench: setup
	python bench/train_step.py

# The server under wrk's load on loopback beside onnxruntime in-process (wrk from Debian's archive).
bench-serve: setup
	sh scripts/install_debian.sh wrk /usr/bin/wrk wrk
	python bench/serve.py

clean:
	rm -rf $(VENV) web/node_modules build/plots_page.html
