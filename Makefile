# Two commands do all the set-up on a fresh machine:
#   make run   - venv, install, migrate, start the API on SQLite at http://127.0.0.1:8000
#   make test  - venv, install dev dependencies, browser-test tools, run the whole suite (PostgreSQL included)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
export PRIVACY_TEST_POSTGRES_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test
E2E := tests/e2e
AXE := $(E2E)/node_modules/axe-core/axe.min.js

.PHONY: run test lint typecheck policy-check bench install clean chromium e2e-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: install
	mkdir -p var
	$(BIN)/privacy-service db upgrade
	$(BIN)/privacy-service serve

# Browser tests drive Debian's Chromium (never a browser downloaded by a test tool: no `playwright install`)
# and inject axe-core, installed from the npm registry as pinned in tests/e2e/package-lock.json.
chromium:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium fonts-noto-cjk)

$(AXE): $(E2E)/package.json $(E2E)/package-lock.json
	npm ci --prefix $(E2E) --no-audit --no-fund
	touch $(AXE)

e2e-deps: chromium $(AXE)

test: install e2e-deps
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check privacy_service tests benchmarks examples
	$(BIN)/ruff format --check privacy_service tests benchmarks examples

typecheck: install
	$(BIN)/mypy

policy-check: install
	$(BIN)/privacy-service policy check

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(E2E)/node_modules $(E2E)/artifacts
