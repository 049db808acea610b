# The two commands (see README.md):
#   make up     install, then run the example shop with `qanat up` (embedded defaults, no server needed)
#   make test   install with dev extras, start the servers the tests need, run lint, types and every test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: up test test-compiled install install-dev servers lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Stamp files: reinstall only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e . 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import qanat" && touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import qanat, pytest, hypothesis" && touch $@ $(VENV)/.installed

up: install
	$(BIN)/qanat up examples/shop

servers:
	bash scripts/servers.sh

lint: install-dev
	$(BIN)/ruff check src tests benchmarks scripts hatch_build.py

typecheck: install-dev
	$(BIN)/mypy

pytest: install-dev servers
	$(BIN)/pytest

test: lint typecheck pytest

# The gateway and http tests again on the compiled build: the wheel `pip install .` makes
# (hatch_build.py compiles the hot path with mypyc; docs/gateway-performance.md).
test-compiled: install-dev servers
	bash benchmarks/gateway/mypyc_tests.sh

bench: install-dev
	$(BIN)/python benchmarks/primitives.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .qanat
