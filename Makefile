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

.PHONY: setup run test test-slow flow bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --constraint requirements.lock --editable '.[test]'
	touch $@

# Params are checked before `dvc repro`, which removes a stage's outputs before running it.
run: setup
	python -m pipeline check-params
	dvc repro
	dvc metrics show

# pytest exits 5 when a selection collects no test: that is not a failure of the suite.
test: setup
	python -m pytest $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-slow: setup
	python -m pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

PROJECT ?= image_classification
flow: setup
	python -m pipeline run $(PROJECT)

bench: setup
	python bench/train_step.py

clean:
	rm -rf $(VENV)
