# Two commands set everything up: `make demo` and `make test`. Both create .venv/ on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vitrt-installed
# TensorRT's type stubs, for mypy only: kept out of the venv, where they would make `import tensorrt`
# succeed as an empty package. Two fixes make them parse (a parameter named `in`, and a parameter
# without a default after defaulted ones); vitrt's TensorRT code is checked against the rest.
STUBS := .typestubs/.vitrt-stubs

.PHONY: demo test lint typecheck kernels unit clean

SETUP_LOG := $(VENV)/setup.log

# pip's own warnings (index locations, build back-end deprecations) go to $(SETUP_LOG), not the terminal;
# the log is printed if a step fails.
$(STAMP): pyproject.toml constraints-cpu.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV)/ (CPU torch pinned; pip's output in $(SETUP_LOG))"
	@$(BIN)/python -m pip install -q --upgrade pip > $(SETUP_LOG) 2>&1 || { cat $(SETUP_LOG); exit 1; }
	@# torch first, pinned to the CPU build, so nothing below pulls the CUDA wheels.
	@$(BIN)/python -m pip install -q -c constraints-cpu.txt torch >> $(SETUP_LOG) 2>&1 \
		|| { cat $(SETUP_LOG); exit 1; }
	@$(BIN)/python -m pip install -q -c constraints-cpu.txt -e '.[dev]' >> $(SETUP_LOG) 2>&1 \
		|| { cat $(SETUP_LOG); exit 1; }
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vitrt demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

$(STUBS): Makefile | $(STAMP)
	rm -rf .typestubs
	$(BIN)/python -m pip install -q --no-deps --target .typestubs tensorrt-stubs==10.13.0.35.1
	sed -i -E 's/(def [a-z_]+\(self[^,]*, )in: /\1in_: /' .typestubs/tensorrt_bindings/tensorrt.pyi
	sed -i 's/channel_axis: int) -> IScaleLayer/channel_axis: int = ...) -> IScaleLayer/' .typestubs/tensorrt_bindings/tensorrt.pyi
	@touch $(STUBS)

typecheck: $(STAMP) $(STUBS)
	$(BIN)/mypy

# The CUDA kernels' fatbins (build/plugins, cached by sources, flags and nvcc version), which the suite
# checks (tests/plugins/test_cuda_build.py builds them itself when they are missing). Without a CUDA
# toolkit there is nothing to build, and those tests skip.
kernels: $(STAMP)
	@if $(BIN)/python -c "from vitrt.plugins.cuda_build import find_cuda_home; find_cuda_home()" 2>/dev/null; \
	then $(BIN)/vitrt plugins build; \
	else echo "no CUDA toolkit (nvcc): the kernel fatbins are not built, and their tests skip"; fi

unit: $(STAMP)
	# Two workers for CI's two cores (each limited to one torch thread in tests/conftest.py); the 30
	# slowest tests listed, to keep the suite within its 12 minutes.
	$(BIN)/pytest -q -n 2 --durations=30

# Lint, type check and the kernel build at once (mypy keeps one core busy, nvcc both), then the suite.
test: $(STAMP)
	@$(MAKE) --no-print-directory -j3 --output-sync=target lint typecheck kernels
	@$(MAKE) --no-print-directory unit

clean:
	rm -rf $(VENV) .typestubs .mypy_cache .ruff_cache .pytest_cache *.egg-info build
