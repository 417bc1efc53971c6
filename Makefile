# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
KCLPY   = $(VENV)/.kclpy
KINESIS_LOCAL = .cache/kinesis-local/node_modules/kinesis-local/main.js
KCL_JARS = .cache/kcl-jars/.checked

.PHONY: demo test lint typecheck unit integration e2e bench clean browser-deps kclpy kinesis-local kcl-jars kcl-local

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

# amazon-kclpy's Python side (the record processor's protocol library), from its PyPI sdist; the
# daemon's jars come from Maven below (docs/kcl.md).
$(KCLPY): $(STAMP) deploy/kcl/install_kclpy.sh
	bash deploy/kcl/install_kclpy.sh $(BIN)/python
	touch $(KCLPY)

kclpy: $(KCLPY)

# The KCL MultiLangDaemon's jars: the pinned list in deploy/kcl/pom.xml, fetched by Maven and checked
# against deploy/kcl/jars.sha256 (needs Java 17 and mvn). Cached under .cache/, never committed.
$(KCL_JARS): deploy/kcl/pom.xml deploy/kcl/jars.sha256 deploy/kcl/fetch_jars.sh
	bash deploy/kcl/fetch_jars.sh .cache/kcl-jars
	touch $(KCL_JARS)

kcl-jars: $(KCL_JARS)

# One local KCL worker: the real daemon against kinesis-local and the embedded AWS (docs/kcl.md).
kcl-local: $(STAMP) $(KCLPY) $(KCL_JARS) $(KINESIS_LOCAL)
	$(BIN)/shelfstream kcl-worker --local

# A second Kinesis (kinesis-mock, inside LocalStack) that reshards faithfully, for the resharding test.
$(KINESIS_LOCAL):
	npm install --silent --no-audit --no-fund --prefix .cache/kinesis-local kinesis-local@0.6.2

kinesis-local: $(KINESIS_LOCAL)

test: $(STAMP) browser-deps $(KCLPY) $(KCL_JARS) $(KINESIS_LOCAL)
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

# Core speed: the whole core in `backtest` against a decode-only pass over the same file.
bench-core: $(STAMP)
	$(BIN)/python -m benchmarks.core_speed --docs docs/detection.md

.PHONY: bench-detect bench-core

# Every benchmark (load test, core speed, detection), figures into docs/benchmarks.md; under 10 minutes.
bench: $(STAMP) $(KCLPY) $(KCL_JARS) $(KINESIS_LOCAL)
	$(BIN)/python -m benchmarks.run_all
