# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench typecheck screenshots browser clean constraints

CONSTRAINTS := deploy/constraints.txt

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	@touch $(STAMP)

## Re-pin deploy/constraints.txt to the newest releases the ranges in pyproject.toml allow
## (then run make test before committing it).
constraints:
	rm -rf build/constraints-venv && $(PYTHON) -m venv build/constraints-venv
	build/constraints-venv/bin/pip install --quiet -e '.[dev]'
	{ sed -n '1,/^# The package itself/p' $(CONSTRAINTS); \
	  build/constraints-venv/bin/pip freeze --exclude-editable | grep -v '^-e'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS) && rm -rf build/constraints-venv

## Run the example flow on the embedded server with local workers and print its results.
demo: $(STAMP)
	$(BIN)/python examples/demo.py

## Run the whole test suite against a real server and real worker processes.
test: $(STAMP) browser
	$(BIN)/pytest

## Debian's Chromium for the dashboard's browser tests (they skip, saying why, without it).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium: the browser tests will skip"; \
	  else echo "chromium is not installed and apt-get is not usable: the browser tests will skip"; fi; }

## Screenshots of the dashboard's main pages into docs/ (linked from the README).
screenshots: $(STAMP) browser
	$(BIN)/python tests/screenshots.py docs

## The suite without the slow fault-injection tests.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

## Benchmarks: flowkit against plain RQ, as a table and bench-results.json.
bench: $(STAMP)
	$(BIN)/python tests/benchmarks/run_bench.py --json bench-results.json

## mypy through a link tree (mypy cannot follow the editable-install mapping).
typecheck: $(STAMP)
	$(BIN)/python -m pip install --quiet mypy
	rm -rf build/typecheck && mkdir -p build/typecheck/flowkit
	for f in flowkit/*; do ln -s ../../../$$f build/typecheck/flowkit/; done
	ln -s ../../../workers build/typecheck/flowkit/workers
	ln -s ../../../dashboard build/typecheck/flowkit/dashboard
	MYPYPATH=build/typecheck $(BIN)/mypy -p flowkit

clean:
	rm -rf $(VENV) build *.egg-info bench-results.json
