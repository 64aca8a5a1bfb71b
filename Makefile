# The two commands a newcomer needs: `make demo` (the main job) and `make test` (the test suite).
# Both create the virtual environment in .venv when it is missing.
#
# TORCH_SPEC pins the torch build. The default is the one on the reference machine's disk
# (CUDA-enabled, runs on CPU). On a GPU box pick your own, e.g.
#   make venv TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cu128"

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
PROFILE ?= default

.PHONY: venv demo test test-fast lint format clean-venv

$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -c requirements/constraints.txt -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

# the main job, then its verdict quoted in the README (the library writes only the report)
demo: venv
	$(PY) -m diffexp ablation --profile $(PROFILE)
	$(PY) reports/quote_verdict.py --profile $(PROFILE)

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# ruff (lint and format check) and the layer rules of pyproject.toml's [tool.importlinter]
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
