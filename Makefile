PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# One stamp per install level: `make demo` installs the core dependencies only (jax, flax, ...);
# `make test` upgrades the same venv to the test extra (torch, transformers, ONNX, Jupyter, ruff, mypy).
CORE_STAMP := $(VENV)/.installed-core
TEST_STAMP := $(VENV)/.installed-test

.PHONY: test lint demo install install-test bench notebooks clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(CORE_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $(CORE_STAMP)

$(TEST_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(TEST_STAMP) $(CORE_STAMP)

install: $(CORE_STAMP)

install-test: $(TEST_STAMP)

lint: $(TEST_STAMP)  ## ruff (lint and format) over the code, mypy over the package
	$(BIN)/ruff check videomt_jax tests bench convert
	$(BIN)/ruff format --check videomt_jax tests bench convert
	$(BIN)/mypy

# two pytest workers (the CPUs of a small machine), a test file each at a time; slow files first (tests/conftest.py)
PYTEST_WORKERS ?= 2

test: lint
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile tests

demo: $(CORE_STAMP)
	$(BIN)/videomt-jax demo

bench: $(TEST_STAMP)  ## the harness times HF transformers too
	$(BIN)/python bench/run_bench.py

notebooks: $(TEST_STAMP)  ## rebuild the notebooks from notebooks/src and store them executed
	$(BIN)/python notebooks/build_notebooks.py --execute

clean:
	rm -rf $(VENV) demo_out .pytest_cache .mypy_cache .ruff_cache
