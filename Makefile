# The two commands a newcomer needs (see README.md):
#   make quickstart   set up a virtual environment and run the main job
#   make test         set up the same environment and run the test suite (end-to-end cases
#                     marked `slow` excluded; `make test-slow` runs them; CI runs both)
#
# TORCH_SPEC picks the torch build installed *before* the package, so pip never pulls a
# multi-GB CUDA build on a CPU machine. On the project's machines `torch==2.13.0` resolves to a
# local CPU wheel; elsewhere pass e.g.
#   make quickstart TORCH_INSTALL="pip install torch --index-url <your CPU wheel index>"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
TORCH_INSTALL ?= $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
STAMP := $(VENV)/.installed

.PHONY: quickstart test test-slow mutants install lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(TORCH_INSTALL)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/itransfer quickstart --out runs/quickstart

test: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/python -m pytest -q -m "not slow" --durations=5

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow --durations=5

# Mutation testing of the science modules (bench/mutants.py); not part of CI's time budget.
mutants: $(STAMP)
	$(BIN)/python -m pip install -q "mutmut>=3.8,<4"
	$(BIN)/python bench/mutants.py --out bench/results-mutants-cpu.json

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
