# Expediente — every task starts from a fresh clone: `make run`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PATH := $(CURDIR)/$(TOOLS)/bin:$(PATH)
UV_VERSION := 0.13.9

.PHONY: install run demo test test-fast lint typecheck synth bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

install: $(VENV)/.synced  ## Python deps from the lock file (uv)

run: install  ## the whole system locally: embedded AWS + API on http://127.0.0.1:3000
	PYTHONPATH=layers/common:. $(PY) -m local

demo: install  ## a scripted clinic day against the running local stack (start it with `make run` first)
	PYTHONPATH=layers/common:. $(PY) -m local.demo

lint: install
	$(VENV)/bin/ruff check .

typecheck: install
	$(VENV)/bin/mypy layers/common functions

test: install lint typecheck  ## every test: unit, integration, infra (synth + cdk-nag + cfn-lint), e2e
	# Every integration test also runs with tenant-scoped credentials, each AWS call judged against the
	# tenant data role's IAM conditions (tests/integration/security/scoped_suite.py, decision 0023).
	$(PY) -m pytest -n 2 --dist loadfile -q -m "not e2e" -p tests.integration.security.scoped_suite
	# The local stack shares moto's process-wide state, so e2e runs in a process of its own.
	$(PY) -m pytest -q -m e2e

synth: install  ## CDK synth (builds the Lambda layer without Docker) with cdk-nag checks
	$(PY) -m infra.app

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

bench: install node_modules/.installed  ## benchmarks; figures are written to benchmarks/README.md
	PYTHONPATH=layers/common:. POWERTOOLS_LOG_LEVEL=WARNING $(PY) -m benchmarks

clean:
	rm -rf build cdk.out .local .pytest_cache .mypy_cache .ruff_cache
