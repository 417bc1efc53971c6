# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
BENCH_STAMP = $(VENV)/.bench-installed
KCLPY   = $(VENV)/.kclpy
KINESIS_LOCAL = .cache/kinesis-local/node_modules/kinesis-local/main.js

.PHONY: demo test lint typecheck unit integration e2e bench clean browser-deps kclpy kinesis-local

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shelfstream demo --duration 60 --stores 6 --summary demo-summary.json

# The dashboard's browser test drives Debian's chromium (Playwright's own browser download is not used).
browser-deps:
	@test -x /usr/bin/chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

# amazon-kclpy's own install downloads the KCL jars from Maven Central; the tests need only its
# Python side, built from the same PyPI sdist without the jar step (docs/kcl.md).
$(KCLPY): $(STAMP) deploy/kcl/install_kclpy.sh
	bash deploy/kcl/install_kclpy.sh $(BIN)/python
	touch $(KCLPY)

kclpy: $(KCLPY)

# A second Kinesis (kinesis-mock, inside LocalStack) that reshards faithfully, for the resharding test.
$(KINESIS_LOCAL):
	npm install --silent --no-audit --no-fund --prefix .cache/kinesis-local kinesis-local@0.6.2

kinesis-local: $(KINESIS_LOCAL)

test: $(STAMP) browser-deps $(KCLPY) $(KINESIS_LOCAL)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .cache

# Detection benchmark: labelled scenarios through `backtest`, ours against a static rule and river's
# HalfSpaceTrees; writes the results table into docs/detection.md (docs/detection.md says how).
bench-detect: $(STAMP)
	$(BIN)/python -m benchmarks.detect --docs docs/detection.md

# Speed: our core against Bytewax and Pathway on the same job and files, and `backtest --workers`.
bench-core: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.engines

.PHONY: bench-detect bench-core

# The peers of the speed benchmark (Bytewax, Pathway), pinned in the `bench` extra; not part of `make test`.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Every benchmark (load test, latency, engines side by side, workers, detection), figures into
# docs/benchmarks.md (and the tables in docs/detection.md, docs/decisions.md); meant for under 15 minutes.
bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run_all
