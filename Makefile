# batchwatch developer commands. Everything installs into this folder (.venv, node_modules).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint unit deps clean

run: deps ## Demo: Azurite + simulator + local host, a few batches tracked to their final outcome
	$(PY) -m local.demo

test: deps lint ## Lint, type-check and run every test (starts and stops its own Azurite)
	$(PY) -m pytest

unit: deps ## Only the tests that need no services
	$(PY) -m pytest tests/unit

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

deps: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
