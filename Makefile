# tinyops — the two commands a fresh machine needs: `make demo` and `make test`.
# The .venv bootstrap is idempotent: it reinstalls only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-16)

# TensorFlow's C++ logging and oneDNN notices are noise for a CLI user.
export TF_CPP_MIN_LOG_LEVEL := 3
export TF_ENABLE_ONEDNN_OPTS := 0
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install demo test lint typecheck pytest bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	@$(BIN)/python -m pip install --quiet -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
	@$(BIN)/python -c "import tinyops, tensorflow, mlflow, tflite_micro" 2>/dev/null \
		|| { echo "install failed: see pip output above" >&2; exit 1; }
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)
	@echo "tinyops installed in $(VENV)"

# The pipeline on examples/digits, then the fleet and monitoring half: a local server and
# 20 simulated devices, drift alerts, retraining into a canary release.
demo: install
	cd examples/digits && ../../$(BIN)/tinyops run . && ../../$(BIN)/python monitor_demo.py

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest -q

test: lint typecheck pytest

# The fleet benchmarks load the server with wrk (Debian package): installed here when
# missing, which needs root (or install it yourself: apt-get install wrk).
bench: install
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "make bench needs wrk: apt-get install wrk (as root)" >&2; exit 1; }
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
	rm -rf examples/digits/.tinyops examples/digits/dist
