# snnbench developer commands. SNNBENCH_DATA defaults to the shared offline MNIST copy.
PYTHON ?= python
export SNNBENCH_DATA ?= $(abspath ../shared/data)

.PHONY: install test test-fast lint format bench study study-quick

install:
	$(PYTHON) -m pip install -e ".[dev]"

test:
	$(PYTHON) -m pytest

test-fast:
	$(PYTHON) -m pytest -m "not slow"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

bench:
	$(PYTHON) -m snnbench.bench

study:
	$(PYTHON) -m snnbench.study

study-quick:
	$(PYTHON) -m snnbench.study --quick --root outputs/study_quick
