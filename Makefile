# maskloop — `make run` serves the platform on embedded defaults, `make test` runs everything.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt
RUN_STAMP := $(VENV)/.run-deps
DEV_STAMP := $(VENV)/.dev-deps
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint unit e2e worker install install-dev system-deps web-deps clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): requirements.txt constraints.txt | $(BIN)/python
	$(PIP) -r requirements.txt
	touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt constraints.txt | $(BIN)/python
	$(PIP) -r requirements-dev.txt
	touch $(RUN_STAMP) $@

install: $(RUN_STAMP)
install-dev: $(DEV_STAMP)

## onnxruntime-web for the tool's browser-side decoding, pinned by package-lock.json (npm ci),
## copied to vendor/static/ (served as static files). Without npm, or when npm fails (no registry),
## the tool decodes on the server; the next make tries again.
ORT_DIST := node_modules/onnxruntime-web/dist
ORT_FILES := ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm
WEB_STAMP := vendor/static/onnxruntime-web/.installed

$(WEB_STAMP): package.json package-lock.json
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "npm not found: the annotation tool will decode on the server (make system-deps installs it)"; \
	elif npm ci --no-audit --no-fund --loglevel=error; then \
	  mkdir -p $(@D) && \
	  for f in $(ORT_FILES); do cp $(ORT_DIST)/$$f $(@D)/; done && touch $@; \
	else \
	  echo "npm ci failed (see above): the annotation tool will decode on the server; the next make tries again"; \
	fi

web-deps: $(WEB_STAMP)

## Serve on http://$(HOST):$(PORT) with one Celery worker (SQLite, var/blobs, folder broker).
run: install web-deps
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v 0
	$(BIN)/python manage.py seed_demo
	HOST=$(HOST) PORT=$(PORT) scripts/run.sh

## Debian packages the tests need (the real-browser tests drive Debian's chromium; npm
## installs onnxruntime-web for browser-side decoding).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing Debian nodejs and npm for the tool's browser runtime"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm; }

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports
	DATABASE_URL=sqlite:///:memory: $(BIN)/python manage.py makemigrations --check --dry-run

unit: install-dev
	$(BIN)/pytest -m "not e2e"

e2e: install-dev system-deps web-deps
	$(BIN)/pytest -m e2e

## Lint, then the whole suite against the real PostgreSQL and Redis on 127.0.0.1.
test: install-dev system-deps web-deps lint
	$(BIN)/pytest

bench: install-dev
	$(BIN)/python bench/export.py
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache node_modules vendor/static
