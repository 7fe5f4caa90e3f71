# batchwatch developer commands. Everything installs into this folder (.venv, node_modules).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INFRA_VENV := .venv-infra

.PHONY: run test bench bench-large chaos prove lint lint-infra unit deps clean

run: deps ## Demo: Azurite + simulator + local host, a few batches tracked to their final outcome
	$(PY) -m local.demo

test: deps lint lint-infra ## Lint, type-check, check infra/ and run every test (starts and stops its own Azurite)
	@$(PY) -m pytest; status=$$?; \
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || test -n "$$BATCHWATCH_CHROMIUM" || \
	  echo "*** The HTML report's browser check DID NOT RUN: no chromium (apt-get install chromium). ***"; \
	exit $$status

bench: deps ## Benchmark: cost per poll, throughput, persistence, memory, start-up, polling efficiency
	$(PY) -m bench.run

bench-large: deps ## Benchmark figure 10 alone at 100,000 devices (an estimated 5 hours on 2 cores with Azurite)
	$(PY) -m bench.run --only large_batch --large-devices 100000

chaos: deps ## Faults, SIGKILLs, an Azurite restart, duplicates and hostile input; fails if anything is lost
	$(PY) -m local.chaos

unit: deps ## Only the tests that need no services (unit and functional)
	$(PY) -m pytest tests/unit tests/functional

prove: deps ## The model-based test of the polling chain at 20,000 examples (make test runs 1,000)
	BATCHWATCH_PROOF_EXAMPLES=20000 $(PY) -m pytest tests/functional/test_model.py

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

lint-infra: $(INFRA_VENV)/.installed ## Checkov over infra/; a file it cannot parse is a failure too
	@out=$$($(INFRA_VENV)/bin/checkov -d infra --framework bicep --skip-download --compact --quiet 2>&1); \
	status=$$?; echo "$$out" | grep -v "^$$" | tail -40; \
	if echo "$$out" | grep -q "Parsing errors"; then echo "checkov could not parse a file in infra/"; exit 1; fi; \
	exit $$status

deps: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(INFRA_VENV)/.installed: requirements-infra.txt
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-infra.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) $(INFRA_VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
