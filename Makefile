# Two entry points: `make demo` (run the main job) and `make test` (run the test suite).
# Both create .venv and install everything; torch comes first as the CPU wheel 2.13.0 so that
# nothing pulls a CUDA build.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/demo

.PHONY: demo test install bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/cellcube train --config configs/default.yaml --out $(RUN) --overwrite
	HF_HUB_OFFLINE=1 $(BIN)/cellcube ask $(RUN) -k 3 \
		"What is artificial intelligence?" \
		"Do you like music?" \
		"What is the capital of France?"

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_cube.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache
