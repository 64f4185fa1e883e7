# One-command set-up: `make test` and `make run` create .venv and install everything.
# torch is installed first at an exact version: on a machine whose pip has that CPU
# build locally (this project's CI) it is fast; elsewhere pip picks the matching build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

# The Inception metrics' real path (tests/test_inception.py's `fidelity` tests) runs in a venv of
# its own: PyPI's torchvision needs the torch build it was made with (CUDA; it runs on a CPU too),
# which is not .venv's CPU torch. It holds ganray[fid] and what those tests import beyond it
# (FID_TEST_DEPS), not the test extra: 6.3 GB, built in 1.5-2 minutes from this CI's local wheels;
# the tests then take 20-40 s.
FID_VENV := .venv-fid
FID_BIN := $(FID_VENV)/bin
FID_TORCH ?= torch==2.14.1 torchvision==0.29.1
FID_TEST_DEPS := "pytest>=9.2" "pytest-timeout>=2.4"
FID_MIN_FREE_GB := 10

.PHONY: install lint test test-fid run bench clean schema

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

schema: install  # configs/ganray.schema.json, the presets' JSON Schema (tests/test_schema.py checks it)
	$(BIN)/ganray schema --output configs/ganray.schema.json

test: install
	$(BIN)/python -m pytest -q -ra tests

# rebuilt from scratch when pyproject.toml or this Makefile (FID_TORCH) changes
$(FID_BIN)/ganray: pyproject.toml Makefile
	rm -rf $(FID_VENV)
	@free=$$(df -Pk . | awk 'NR == 2 { print int($$4 / 1048576) }'); \
	if [ "$$free" -lt $(FID_MIN_FREE_GB) ]; then \
	  echo "make test-fid: $(FID_VENV) takes about 6.3 GB; $$free GB free here (df .), need $(FID_MIN_FREE_GB) GB (FID_MIN_FREE_GB)" >&2; \
	  exit 1; \
	fi
	$(PY) -m venv $(FID_VENV)
	$(FID_BIN)/pip install -q --upgrade pip
	$(FID_BIN)/pip install -q $(FID_TORCH)
	$(FID_BIN)/pip install -q -e ".[fid]" $(FID_TEST_DEPS)
	touch $(FID_BIN)/ganray

# only the tests marked `fidelity` (make test ran the rest); GANRAY_REQUIRE_FIDELITY: they fail here rather than skip
test-fid: $(FID_BIN)/ganray
	GANRAY_REQUIRE_FIDELITY=1 $(FID_BIN)/python -m pytest -q -ra -m fidelity tests/test_inception.py

run: install
	$(BIN)/python jobs/sweep_zdim.py

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) $(FID_VENV) ganray_results .pytest_cache
