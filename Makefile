# One-command set-up: `make test` and `make run` create .venv and install everything.
# torch is installed first at an exact version: on a machine whose pip has that CPU
# build locally (this project's CI) it is fast; elsewhere pip picks the matching build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install lint test run bench clean

$(BIN)/ganray: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $(BIN)/ganray

install: $(BIN)/ganray

lint: install
	$(BIN)/ruff check ganray tests bench jobs
	$(BIN)/lint-imports

test: install
	$(BIN)/python -m pytest -q -ra tests

run: install
	$(BIN)/python jobs/sweep_zdim.py

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) ganray_results .pytest_cache
