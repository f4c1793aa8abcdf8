# The two commands a newcomer needs (see README):
#   make run    create the environment and run the main job
#   make test   create the environment and run the tests
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
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

.PHONY: install run test
install: $(VENV)/.installed

run: install
	$(BIN)/emoflow run --raw-root $(RAW_ROOT) --max-steps $(RUN_STEPS) $(if $(SOURCES),--sources $(SOURCES))

test: install
	bash tests/browser/install_chromium.sh
	$(BIN)/python -m pytest
