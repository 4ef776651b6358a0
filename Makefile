PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo install bench notebooks clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/videomt-jax demo

bench: $(STAMP)
	$(BIN)/python bench/run_bench.py

notebooks: $(STAMP)  ## rebuild the notebooks from notebooks/src and store them executed
	$(BIN)/python notebooks/build_notebooks.py --execute

clean:
	rm -rf $(VENV) demo_out .pytest_cache
