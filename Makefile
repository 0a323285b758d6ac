# maskloop — `make run` serves the platform on embedded defaults, `make test` runs everything.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt
RUN_STAMP := $(VENV)/.run-deps
DEV_STAMP := $(VENV)/.dev-deps
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint unit e2e worker install install-dev system-deps clean bench

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

## Serve on http://$(HOST):$(PORT) with one Celery worker (SQLite, var/blobs, folder broker).
run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v 0
	$(BIN)/python manage.py seed_demo
	HOST=$(HOST) PORT=$(PORT) scripts/run.sh

## Debian packages the tests need (the real-browser tests drive Debian's chromium).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports
	DATABASE_URL=sqlite:///:memory: $(BIN)/python manage.py makemigrations --check --dry-run

unit: install-dev
	$(BIN)/pytest -m "not e2e"

e2e: install-dev system-deps
	$(BIN)/pytest -m e2e

## Lint, then the whole suite against the real PostgreSQL and Redis on 127.0.0.1.
test: install-dev system-deps lint
	$(BIN)/pytest

bench: install-dev
	$(BIN)/python bench/export.py
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
