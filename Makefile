# The commands people type. `make demo` and `make test` set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LPIPS_WEIGHTS := .cache/lpips_alexnet.safetensors

.PHONY: venv demo test test-core test-integration weights bench bench-quick lint clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

weights: $(STAMP)
	@$(PY) scripts/fetch_lpips_weights.py --out $(LPIPS_WEIGHTS) || \
		echo "LPIPS weights unavailable: LPIPS metrics will be skipped"

demo: $(STAMP)
	bash scripts/demo.sh

test: $(STAMP) weights
	bash scripts/test.sh

test-core: $(STAMP)
	$(PY) -m pytest -q tests/core

bench: $(STAMP) weights
	$(PY) -m benchmarks.run_all

bench-quick: $(STAMP) weights
	$(PY) -m benchmarks.run_all --quick

lint: $(STAMP)
	$(VENV)/bin/ruff check restora_core tasks flows tests benchmarks

clean:
	rm -rf $(VENV) .cache demo_out .pytest_cache
