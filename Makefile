# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv by itself
# and installs what it needs: the demo only flowkit and its runtime dependencies, the tests
# the test tools on top.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev
CONSTRAINTS := deploy/constraints.txt
PIP := $(BIN)/python -m pip install --disable-pip-version-check -c $(CONSTRAINTS)

.PHONY: demo test test-fast lint bench bench-big typecheck screenshots browser faketime clean constraints

$(BIN)/python:
	@echo "==> creating the virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)

$(RUNTIME): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	@echo "==> installing flowkit and what it needs to run (redis, rq, pydantic, starlette, ...)"
	$(PIP) --progress-bar off -e . | grep -E '^(Collecting|Successfully)' || true
	@$(BIN)/python -c "import flowkit, flowkit.workers, flowkit.dashboard" \
	  || { echo "flowkit did not install: see the pip output above"; exit 1; }
	@touch $(RUNTIME)

$(DEV): $(RUNTIME)
	@echo "==> installing the test tools (pytest, playwright, httpx, numpy, ruff, mypy)"
	$(PIP) --quiet -e '.[dev]'
	@touch $(DEV)

## Run the example flow on the embedded server with local workers and print its results.
demo: $(RUNTIME)
	$(BIN)/python examples/demo.py

## Run the whole test suite against a real server and real worker processes, in
## $(TEST_PROCESSES) pytest processes (each starts its own server; a file's tests stay together).
TEST_PROCESSES ?= 2
test: $(DEV) browser faketime
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile

## The suite without the slow fault-injection tests.
test-fast: $(DEV)
	$(BIN)/pytest -m "not slow"

## ruff, and mypy --strict over the product (what .ci/run checks before the tests).
lint: $(DEV) typecheck
	$(BIN)/ruff check flowkit workers dashboard tests examples

## mypy through a link tree (mypy cannot follow the editable-install mapping).
typecheck: $(DEV)
	rm -rf build/typecheck && mkdir -p build/typecheck/flowkit
	for f in flowkit/*; do ln -s ../../../$$f build/typecheck/flowkit/; done
	ln -s ../../../workers build/typecheck/flowkit/workers
	ln -s ../../../dashboard build/typecheck/flowkit/dashboard
	MYPYPATH=build/typecheck $(BIN)/mypy -p flowkit

## Debian's Chromium for the dashboard's browser tests (they skip, saying why, without it).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium: the browser tests will skip"; \
	  else echo "chromium is not installed and apt-get is not usable: the browser tests will skip"; fi; }

## Debian's libfaketime for the clock-skew tests (they skip, saying why, without it).
faketime:
	@[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libfaketime >/dev/null) \
	      || echo "could not install libfaketime: the clock-skew tests will skip"; \
	  else echo "libfaketime is not installed and apt-get is not usable: the clock-skew tests will skip"; fi; }

## Screenshots of the dashboard's main pages into docs/ (linked from the README).
screenshots: $(DEV) browser
	$(BIN)/python tests/screenshots.py docs

## Benchmarks: flowkit against plain RQ and a hand-rolled loop, as a table and
## bench-results.json, then the README's performance table regenerated from that file (only
## when every figure was measured and checked).
bench: $(DEV)
	$(BIN)/python tests/benchmarks/run_bench.py --json bench-results.json
	$(BIN)/python tests/benchmarks/big_maps.py --sizes 100000 --json big-maps.json
	$(BIN)/python tests/benchmarks/readme_table.py bench-results.json README.md

## A 1,000,000-task map (keep="summary") to completion: time and peak memory (about 20 min).
bench-big: $(DEV)
	$(BIN)/python tests/benchmarks/big_maps.py --sizes 1000000 --keep summary --json big-maps-1m.json

## Re-pin deploy/constraints.txt to the newest releases the ranges in pyproject.toml allow
## (then run make test before committing it).
constraints:
	rm -rf build/constraints-venv && $(PYTHON) -m venv build/constraints-venv
	build/constraints-venv/bin/pip install --quiet -e '.[dev]'
	{ sed -n '1,/^# The package itself/p' $(CONSTRAINTS); \
	  build/constraints-venv/bin/pip freeze --exclude-editable | grep -v '^-e'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS) && rm -rf build/constraints-venv

clean:
	rm -rf $(VENV) build *.egg-info bench-results.json big-maps*.json
