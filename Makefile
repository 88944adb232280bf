# The two commands a newcomer runs: `make demo` and `make test`. Both call `setup` first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint typecheck unit clean-cache

setup: $(STAMP)

# Idempotent: re-runs only when pyproject.toml changes or the venv is missing.
$(STAMP): pyproject.toml scripts/setup-system
	bash scripts/setup-system
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	bash scripts/kafka-local fetch
	bash scripts/toxiproxy-build
	touch $(STAMP)

demo: setup
	$(PY) -m pipeline.demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy pipeline agents tables sinks api tests bench

unit: setup
	$(VENV)/bin/pytest -m "not integration"

test: setup lint typecheck
	$(VENV)/bin/pytest
