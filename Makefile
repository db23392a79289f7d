# Two entry points for a new user: `make repro` (install + run the whole pipeline) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# `make mlflow-server`: one MLflow tracking server for this project (its SQLite store and artifact
# folder) on 127.0.0.1:$(MLFLOW_PORT); point jobs at it with MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT).
MLFLOW_HOST    ?= 127.0.0.1
MLFLOW_PORT    ?= 5000
MLFLOW_WORKERS ?= 2

.PHONY: install repro test lint bench clean-venv mlflow-server

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev]'
	# byte-compile the installed packages on every core (pip would do it on one: ≈ 12 s more on 2 cores),
	# their test suites aside (a fifth of the sources, never imported: 14 s -> 10 s on 2 cores); a file
	# that does not compile is left to its first import, as pip leaves it
	-$(BIN)/python -m compileall -q -j 0 -x '/tests/' $(VENV)/lib > /dev/null
	touch $(STAMP)

install: $(STAMP)

repro: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/dvc repro

# `make test` runs the suite on TEST_WORKERS processes (pytest-xdist), each test file on one of
# them, so a module's fixtures are built once; files are handed out in collection order, by kind:
# tests/system/ first, then tests/stages/, then tests/unit/ (tests/conftest.py), not by their
# number of tests. `make test TEST_WORKERS=0` runs it in one process, PYTEST_ARGS adds options
# (`make test PYTEST_ARGS="-m 'not slow'"`, `PYTEST_ARGS=tests/unit`). A plain
# `python -m pytest tests/unit/test_x.py` stays serial.
TEST_WORKERS ?= 2
PYTEST_ARGS  ?=

test: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests benchmarks

bench: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python benchmarks/bench_softmax_mnist.py

mlflow-server: $(STAMP)
	$(BIN)/mlflow server --backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
	  --artifacts-destination $(CURDIR)/mlartifacts --serve-artifacts \
	  --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) --workers $(MLFLOW_WORKERS)

clean-venv:
	rm -rf $(VENV)
