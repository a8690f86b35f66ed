# Two commands matter: `make run` and `make test`. Everything else is what they need.
# Each step runs only when its inputs changed, so both are fast the second time.

SHELL := /bin/bash
PYTHON ?= python3
NPM ?= npm
VENV := .venv
BIN := $(VENV)/bin
APP := nextjs-app
CONFIG ?= config/gateway.yaml
export NEXT_TELEMETRY_DISABLED := 1

# What a `next build` depends on; a build older than any of these is rebuilt.
# (Not $(APP)/tests: the glue's vitest tests are no part of the build.)
APP_SOURCES := $(shell find $(APP) \( -path $(APP)/node_modules -o -path $(APP)/.next \
	-o -path $(APP)/tests \) -prune \
	-o -type f \( -name '*.ts' -o -name '*.tsx' -o -name '*.js' -o -name '*.mjs' -o -name '*.css' \
	-o -name '*.json' -o -path '$(APP)/public/*' \) -print 2>/dev/null | grep -v 'next-env.d.ts')

.PHONY: run test build app-deps install install-test lint clean help
.DEFAULT_GOAL := help

help:
	@echo "make run    build what is missing, then serve $(APP) through the gateway on :8000"
	@echo "make test   set up everything the tests need, then run the whole suite"
	@echo "make build  install and build $(APP) (only when stale)"
	@echo "make lint   ruff and mypy"
	@echo "make clean  remove $(VENV), $(APP)/node_modules and $(APP)/.next"

run: install build
	$(BIN)/gateway run --config $(CONFIG)

test: install-test build tests/node/node_modules/.package-lock.json lint
	$(BIN)/pytest

lint: install-test
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/mypy gateway

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/.python-ok:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
		{ echo "Python >= 3.11 is required ($(PYTHON) is $$($(PYTHON) -V 2>&1)); set PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@touch $@

$(VENV)/.installed: $(VENV)/.python-ok setup.py
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed setup.py
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

build: $(APP)/.next/BUILD_ID
app-deps: $(APP)/node_modules/.package-lock.json

$(APP)/node_modules/.package-lock.json: $(APP)/package.json $(APP)/package-lock.json
	@command -v node >/dev/null || { echo "Node.js >= 20 is required: node is not on PATH"; exit 1; }
	cd $(APP) && $(NPM) ci --no-audit --no-fund
	@touch $@

$(APP)/.next/BUILD_ID: $(APP)/node_modules/.package-lock.json $(APP_SOURCES)
	cd $(APP) && node node_modules/next/dist/bin/next build
	@touch $@

# The centrifuge SDK (and ws) the tests drive from Node.
tests/node/node_modules/.package-lock.json: tests/node/package.json tests/node/package-lock.json
	cd tests/node && $(NPM) ci --no-audit --no-fund
	@touch $@

clean:
	rm -rf $(VENV) $(APP)/node_modules $(APP)/.next tests/node/node_modules
