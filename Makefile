# The two commands a newcomer needs (see README):
#   make run    create the environment and run the main job
#   make test   create the environment and run the tests
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# DVC is a command-line tool with its own environment: its hydra-core pins antlr4-python3-runtime 4.9, while
# Dagster's asset-selection parser needs 4.13 (../shared/docs/stack.md). $(BIN)/dvc runs it with this project's
# environment first on PATH, so the stages' `python` is the project's.
DVC_VENV ?= .venv-dvc
RAW_ROOT ?= data/raw
RUN_STEPS ?= 200
SOURCES ?=
export MLFLOW_DISABLE_TELEMETRY ?= true
export DVC_NO_ANALYTICS ?= 1
export GX_ANALYTICS_ENABLED ?= false

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3"
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[test]"
	touch $@

$(DVC_VENV)/.installed: requirements-dvc.lock
	test -x $(DVC_VENV)/bin/python || $(PYTHON) -m venv $(DVC_VENV)
	$(DVC_VENV)/bin/python -m pip install --quiet --upgrade "pip==26.3"
	$(DVC_VENV)/bin/python -m pip install --quiet -r requirements-dvc.lock
	touch $@

$(BIN)/dvc: $(VENV)/.installed $(DVC_VENV)/.installed
	printf '#!/usr/bin/env bash\n# DVC from its own environment; the stages run with this environment first on PATH.\nPATH="%s:$$PATH" exec "%s" "$$@"\n' \
		"$(abspath $(BIN))" "$(abspath $(DVC_VENV))/bin/dvc" > $@
	chmod +x $@

.PHONY: install run test lint
install: $(VENV)/.installed $(BIN)/dvc

run: install
	$(BIN)/emoflow run --raw-root $(RAW_ROOT) --max-steps $(RUN_STEPS) $(if $(SOURCES),--sources $(SOURCES))

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install lint
	bash tests/browser/install_chromium.sh
	$(BIN)/python -m pytest
