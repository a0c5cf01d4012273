# Two commands do all the set-up on a fresh machine:
#   make run   - venv, install, migrate, start the API on SQLite at http://127.0.0.1:8000
#   make test  - venv, install dev dependencies, browser-test tools, run the whole suite (PostgreSQL included)
# `make test` also needs Node.js/npm (axe-core) and Chromium from Debian (installing it needs root):
# it says so, with the command to run, when they are missing. `make docs` builds the documentation site.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
export PRIVACY_TEST_POSTGRES_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test
# tests/connections: the MariaDB server (a database of its own per test session is created next to `test`).
export PRIVACY_TEST_MARIADB_URL ?= mysql+aiomysql://root@127.0.0.1:3306/test
E2E := tests/e2e
# The console's API reference (privacy_service/web/static/vendor/swagger-ui): files of this npm package,
# committed, so the page works offline under the strict CSP. `make vendor-swagger-ui` fetches them again.
SWAGGER_UI_VERSION := 5.31.0
SWAGGER_UI_DIR := privacy_service/web/static/vendor/swagger-ui
AXE := $(E2E)/node_modules/axe-core/axe.min.js

.PHONY: run test lint typecheck policy-check bench bench-console screenshots install clean chromium promtool e2e-deps docs docs-serve vendor-swagger-ui

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,docs]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: install
	mkdir -p var
	$(BIN)/privacy-service db upgrade
	$(BIN)/privacy-service serve

# Browser tests drive Debian's Chromium (never a browser downloaded by a test tool: no `playwright install`)
# and inject axe-core, installed from the npm registry as pinned in tests/e2e/package-lock.json.
NO_BROWSER_HINT := or run every other test without them:  $(BIN)/pytest --ignore=tests/e2e

chromium:
	@command -v chromium >/dev/null && { ! command -v dpkg-query >/dev/null || \
	  dpkg-query -W -f='$${Status}' fonts-noto-cjk 2>/dev/null | grep -q 'ok installed'; } && exit 0; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  printf '%s\n' "make test: Chromium or the CJK fonts are missing. The browser tests (tests/e2e) drive Debian's /usr/bin/chromium" \
	    "and measure Chinese text (fonts-noto-cjk);" \
	    "and installing it needs root and apt-get. Run as root:" \
	    "    apt-get update && apt-get install -y chromium fonts-noto-cjk" \
	    "then run make test again; $(NO_BROWSER_HINT)" >&2; \
	  exit 1; \
	fi; \
	echo "make test: installing Chromium and the CJK fonts from Debian (apt-get)"; \
	apt-get update && apt-get install -y chromium fonts-noto-cjk

$(AXE): $(E2E)/package.json $(E2E)/package-lock.json
	@command -v npm >/dev/null || { \
	  printf '%s\n' "make test: npm is missing. The browser tests inject axe-core, installed from the npm registry" \
	    "with npm ci (pinned in $(E2E)/package-lock.json). Install Node.js and npm, e.g. as root:" \
	    "    apt-get update && apt-get install -y nodejs npm" \
	    "then run make test again; $(NO_BROWSER_HINT)" >&2; \
	  exit 1; }
	npm ci --prefix $(E2E) --no-audit --no-fund
	touch $(AXE)

# tests/integration/test_deploy_files.py checks and unit-tests the Prometheus alert rules with promtool
# (Debian package prometheus); installed here when root can, else those tests say they were skipped (CI fails them).
promtool:
	@command -v promtool >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "make test: installing promtool from Debian (apt-get install prometheus)"; \
	  apt-get install -y --no-install-recommends prometheus >/dev/null || \
	    { apt-get update >/dev/null && apt-get install -y --no-install-recommends prometheus >/dev/null; }; \
	else echo "make test: promtool is missing (apt-get install prometheus as root); the alert-rule tests will be skipped" >&2; fi

e2e-deps: chromium $(AXE) promtool

test: install e2e-deps
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check privacy_service tests benchmarks examples docs/_hooks
	$(BIN)/ruff format --check privacy_service tests benchmarks examples docs/_hooks

typecheck: install
	$(BIN)/mypy

policy-check: install
	$(BIN)/privacy-service policy check

bench: install
	$(BIN)/python -m benchmarks

# The console's pages alone (also part of `make bench`): p95 of every console page at 10,000 open
# requests and 100,000 subjects on PostgreSQL (benchmarks/console.py).
bench-console: install
	PRIVACY_BENCH_ONLY=console $(BIN)/python -m benchmarks

# docs/images/console/*.png: the console's main pages (en, a zh dashboard, a phone-width page) from a
# service started with demo data entered through the API, in Debian's Chromium (tests/e2e/screenshots.py).
screenshots: install chromium
	$(BIN)/python -m tests.e2e.screenshots --out docs/images/console

# The documentation site (mkdocs.yml, docs/): --strict turns a broken link or anchor into a failure.
# The API reference is generated from the app's OpenAPI document during the build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(E2E)/node_modules $(E2E)/artifacts site

vendor-swagger-ui:
	rm -rf $(SWAGGER_UI_DIR).tmp && mkdir -p $(SWAGGER_UI_DIR).tmp
	cd $(SWAGGER_UI_DIR).tmp && npm pack --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) && tar xzf swagger-ui-dist-$(SWAGGER_UI_VERSION).tgz
	rm -rf $(SWAGGER_UI_DIR) && mkdir -p $(SWAGGER_UI_DIR)
	cd $(SWAGGER_UI_DIR).tmp/package && cp LICENSE NOTICE swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui-standalone-preset.js swagger-ui-standalone-preset.js.LICENSE.txt swagger-ui.css ../../swagger-ui/
	sed -i '/^\/\/# sourceMappingURL=/d' $(SWAGGER_UI_DIR)/swagger-ui-bundle.js $(SWAGGER_UI_DIR)/swagger-ui-standalone-preset.js
	sed -i 's|/\*# sourceMappingURL=[^*]*\*/||' $(SWAGGER_UI_DIR)/swagger-ui.css
	echo "swagger-ui-dist $(SWAGGER_UI_VERSION) from the npm registry (make vendor-swagger-ui)" > $(SWAGGER_UI_DIR)/VERSION
	rm -rf $(SWAGGER_UI_DIR).tmp
