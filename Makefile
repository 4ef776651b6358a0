PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint demo install bench notebooks clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)  ## ruff (lint and format) over the code, mypy over the package
	$(BIN)/ruff check videomt_jax tests bench convert
	$(BIN)/ruff format --check videomt_jax tests bench convert
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/videomt-jax demo

bench: $(STAMP)
	$(BIN)/python bench/run_bench.py

notebooks: $(STAMP)  ## rebuild the notebooks from notebooks/src and store them executed
	$(BIN)/python notebooks/build_notebooks.py --execute

clean:
	rm -rf $(VENV) demo_out .pytest_cache .mypy_cache .ruff_cache
