# The two commands a newcomer needs: `make demo` and `make test`; `make check` is the fast lane.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
BENCH_STAMP = $(VENV)/.bench-installed
KCLPY   = $(VENV)/.kclpy
KINESIS_LOCAL = .cache/kinesis-local/node_modules/kinesis-local/main.js
KCL_JARS = .cache/kcl-jars/.checked

.PHONY: demo check test lint typecheck settings-docs unit integration e2e bench bench-restock bench-checkpoint clean browser-deps kclpy kinesis-local kcl-jars kcl-local vendor-check

# Tests run in parallel (pytest-xdist, one worker per core); `serial` tests share one worker, one at a
# time (tests/conftest.py). `make check` leaves out what needs more than Python (pyproject.toml markers).
PYTEST_PARALLEL = -n auto --dist loadgroup
CHECK_MARKERS = not slow and not java and not npm and not chromium and not daemon

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

# The dashboard's chart library (uPlot, vendored under shelfstream/api/static/vendor/): fetch the pinned
# release from npm and check it and the vendored copy against deploy/vendor/uplot.sha256.
vendor-check:
	bash deploy/vendor/uplot.sh check

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

# Everything, as CI runs it (.ci/run): needs Java 17, Maven, npm and apt for chromium besides Python.
test: $(STAMP) browser-deps $(KCLPY) $(KCL_JARS) $(KINESIS_LOCAL)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q $(PYTEST_PARALLEL)

# The fast lane while working: ruff, mypy and every test that needs nothing outside Python (no Java, npm,
# chromium or spawned daemons); amazon-kclpy's Python side is a PyPI package, so it is installed too.
check: $(STAMP) $(KCLPY)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q $(PYTEST_PARALLEL) -m "$(CHECK_MARKERS)"

# One folder of tests, everything in it (what it needs is installed first).
unit: $(STAMP) $(KCLPY)
	$(BIN)/pytest -q $(PYTEST_PARALLEL) tests/unit

integration: $(STAMP) $(KCLPY) $(KCL_JARS) $(KINESIS_LOCAL)
	$(BIN)/pytest -q $(PYTEST_PARALLEL) tests/integration

e2e: $(STAMP) browser-deps
	$(BIN)/pytest -q $(PYTEST_PARALLEL) tests/e2e

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# docs/settings.md, written from the settings' models (tests/unit/test_settings.py fails when it is stale).
settings-docs: $(STAMP)
	$(BIN)/python -m config.reference

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .cache

# Detection benchmarks: labelled scenarios through `backtest`, ours against the baselines; the
# established stores' benchmark and the fleet in local time scored from each store's second day
# (baselines tuned on seeds 1-4, ours on 1-12; reported on 1001-1004); both write their tables into
# docs/detection.md.
bench-detect: $(STAMP)
	$(BIN)/python -m benchmarks.detect --docs docs/detection.md
	$(BIN)/python -m benchmarks.detect_fleet --docs docs/detection.md
	$(BIN)/python -m benchmarks.detect_scale --docs docs/detection.md
	$(BIN)/python -m benchmarks.detect_fleet --feedback --feedback-tune --docs docs/detection.md

# Restocking: the threshold rule against the demand-aware policy on the same simulated demand and trucks,
# seeds not tuned on; writes its section of docs/benchmarks.md (exit status 1 when a target is missed).
bench-restock: $(STAMP)
	$(BIN)/python -m benchmarks.restock --docs docs/benchmarks.md

# Speed: our core against Bytewax and Pathway on the same job and files, and `backtest --workers`.
bench-core: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.engines

# Soak: one shard at 1,000 events/s for 30 days of event time (bounded memory, incremental
# checkpoints, restore); figures into docs/benchmarks.md and curves into docs/soak.png.
bench-soak: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks.soak --docs docs/benchmarks.md --plot docs/soak.png --json .cache/soak.json

# Checkpoint state: size and CPU time to write and restore one shard of 100 stores (docs/benchmarks.md).
bench-checkpoint: $(STAMP)
	$(BIN)/python -m benchmarks.checkpoint_state --docs docs/benchmarks.md

# History tables: 30 days of 100 stores through the local path (write throughput, files per partition,
# storage against JSON lines, the weekly report's and a KPI query's time) into docs/benchmarks.md.
bench-history: $(STAMP)
	$(BIN)/python -m benchmarks.history_tables --docs docs/benchmarks.md

# Warm start: `warm-start` over 30 days of 100 stores (its time), and the week after it against a processor
# that ran the whole time and one started empty (detection and restock figures) into docs/benchmarks.md.
bench-warm: $(STAMP)
	$(BIN)/python -m benchmarks.warm_start --docs docs/benchmarks.md

.PHONY: bench-detect bench-core bench-soak bench-history bench-warm fuzz

# Coverage-guided fuzzing of the core, KPL de-aggregation and the API's parser (atheris); the suite
# runs the same target for 5 s. FUZZ_SECONDS=3600 make fuzz for a longer hunt; crashes land in .cache/fuzz.
FUZZ_SECONDS ?= 300
fuzz: $(STAMP)
	mkdir -p .cache/fuzz/corpus && cp -n tests/fuzz/corpus/* .cache/fuzz/corpus/
	cd .cache/fuzz && ../../$(BIN)/python ../../tests/fuzz/fuzz_records.py corpus -max_total_time=$(FUZZ_SECONDS) -timeout=20

# The peers of the speed benchmark (Bytewax, Pathway), pinned in the `bench` extra; not part of `make test`.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Every benchmark (load test, latency, engines side by side, workers, detection), figures into
# docs/benchmarks.md (and the tables in docs/detection.md, benchmarks/core-speed-experiments.md); meant for under 15 minutes.
bench: $(BENCH_STAMP) $(KCLPY) $(KCL_JARS) $(KINESIS_LOCAL)
	$(BIN)/python -m benchmarks.run_all
