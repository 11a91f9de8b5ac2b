# Two commands set everything up: `make demo` and `make test`. Both create .venv/ on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vitrt-installed

.PHONY: demo test lint typecheck unit clean

$(STAMP): pyproject.toml constraints-cpu.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned to the CPU build, so nothing below pulls the CUDA wheels.
	$(BIN)/python -m pip install -q -c constraints-cpu.txt torch
	$(BIN)/python -m pip install -q -c constraints-cpu.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vitrt demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	# Two workers for CI's two cores (each limited to one torch thread in tests/conftest.py).
	$(BIN)/pytest -q -n 2

test: lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
