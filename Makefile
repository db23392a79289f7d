# Two entry points for a new user: `make repro` (install + run the whole pipeline) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install repro test lint bench clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

repro: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/dvc repro

test: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests benchmarks

bench: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python benchmarks/bench_softmax_mnist.py

clean-venv:
	rm -rf $(VENV)
