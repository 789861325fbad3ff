# snnbench commands. `make run` and `make test` set everything up on a fresh machine: outside
# an active virtualenv they create .venv in this folder and install the project and its dev
# tools there (again whenever pyproject.toml or setup.py changes); inside one, they install
# into it. MNIST comes from $SNNBENCH_DATA, the user's cache, or is downloaded there once.
#   make run ARGS="model=ann debug=quick"     make test PYTEST_ARGS="-m 'not slow'"
PYTHON ?= python3
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := .venv
endif
PY := $(VENV)/bin/python
# the suite in parallel: one worker per core (at most 4), each test file on one worker (files
# share their session fixtures: a PostgreSQL cluster, a SLURM cluster). XDIST= runs serially.
XDIST ?= -n auto --maxprocesses 4 --dist loadfile
# one stamp per checkout, so an environment shared by several checkouts installs each
STAMP := $(VENV)/.snnbench-installed-$(shell printf %s "$(CURDIR)" | cksum | cut -d' ' -f1)

.PHONY: install run test test-fast lint format bench bench-conv wheel study study-quick

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml setup.py | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

run: $(STAMP)
	$(PY) -m snnbench $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(STAMP)
	$(PY) -m snnbench.bench $(ARGS)

bench-conv: $(STAMP)
	$(PY) -m snnbench.conv_bench $(ARGS)

# the wheel (configs inside: snnbench/conf) into dist/
wheel: $(STAMP)
	rm -rf build dist
	$(PY) -m pip wheel --quiet --disable-pip-version-check --no-deps -w dist .

study: $(STAMP)
	$(PY) -m snnbench.study $(ARGS)

study-quick: $(STAMP)
	$(PY) -m snnbench.study --quick --root outputs/study_quick $(ARGS)
