# event-consumer — every target works on a fresh clone with only python3, node/npm and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

.PHONY: all test lint typecheck unit demo simulate bench chaos clean systemd-analyze chromium

all: test

# The venv is rebuilt when pyproject.toml changes; the npm peers when package-lock.json changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,sim]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

venv: $(VENV)/.installed
peers: node_modules/.installed

lint: $(VENV)/.installed
	$(BIN)/ruff check consumer tests bench
	$(BIN)/ruff format --check consumer tests bench

typecheck: $(VENV)/.installed
	$(BIN)/mypy

# systemd-analyze for the unit-file test (tests/daemon/test_deploy.py); installed from Debian when root.
systemd-analyze:
	@command -v systemd-analyze >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd \
	  >/dev/null; } || echo "systemd-analyze unavailable: the unit-file test will skip"

# Debian's chromium for the live page's browser tests (tests/web/test_board_page.py, driven by npm
# playwright-core); installed from Debian when root.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
	  >/dev/null; } || echo "chromium unavailable: the browser tests will fail"

unit: $(VENV)/.installed node_modules/.installed systemd-analyze chromium
	$(BIN)/pytest -q -p no:cacheprovider

# The README's test command: install everything a test needs, lint, type-check, run the suite.
test: $(VENV)/.installed node_modules/.installed lint typecheck unit

# Live demo: simulator + daemon, output on this terminal.
demo: $(VENV)/.installed
	$(BIN)/event-consumer demo

simulate: $(VENV)/.installed
	$(BIN)/event-consumer simulate

bench: $(VENV)/.installed node_modules/.installed
	$(PY) bench/run.py

# Then 1,000,000 coverage-guided atheris executions per fuzz target; a crash fails the target and
# libFuzzer writes the crashing input to ./crash-<sha1>.
FUZZ_RUNS ?= 1000000
chaos: $(VENV)/.installed node_modules/.installed
	$(BIN)/pytest -q -p no:cacheprovider -m chaos --chaos-long --timeout=7200 tests/chaos
	$(BIN)/pip install --quiet 'atheris>=2.3'
	$(PY) tests/chaos/fuzz/fuzz_protocol.py -runs=$(FUZZ_RUNS) -print_final_stats=1
	$(PY) tests/chaos/fuzz/fuzz_config.py -runs=$(FUZZ_RUNS) -print_final_stats=1

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
