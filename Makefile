# Two entry points for a fresh machine: `make pipeline` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# dvc.yaml's stage commands call `idgenrec`, `dvc` calls git: the venv's tools come first.
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Offline by default: no hub look-ups, no telemetry (see idgenrec/offline.py for the library's own defaults).
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false

.PHONY: install pipeline test test-quick results results-full

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned, so nothing pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

pipeline: install
	$(BIN)/idgenrec data fetch ml-100k
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show

test: install
	$(BIN)/python -m pytest

# Everything but the tests that train a whole tiny pipeline or start a server (markers: pyproject.toml).
test-quick: install
	$(BIN)/python -m pytest -m "not slow"

# The benchmark suite (benchmarks/README.md): the quick set reruns the ML-100k headline and the speed
# figures, the full set every seed, ID kind and dataset; both regenerate the results tables.
results: install
	$(BIN)/idgenrec data fetch ml-100k
	$(BIN)/python -m benchmarks run quick

results-full: install
	$(BIN)/idgenrec data fetch ml-100k
	$(BIN)/python -m benchmarks run full
