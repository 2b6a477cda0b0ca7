# The two commands of the README:
#   make run   - virtualenv, pinned requirements, migrate, demo users and demo case, serve on http://127.0.0.1:8000 (DEBUG off)
#   make dev   - the same with DEBUG on, for developers
#   make test  - virtualenv, pinned dev requirements, Chromium for the browser tests, ruff, pytest
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

# Tests use the local PostgreSQL when it answers (CI always has it), else SQLite.
PG_URL := postgres://postgres@127.0.0.1:5432/hematovision
TEST_DATABASE_URL ?= $(shell (command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432) && echo $(PG_URL))

.PHONY: run dev test lint bench install-run install-dev chromium clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-run: $(BIN)/python requirements/base.txt requirements/ml.txt
	$(BIN)/pip install --quiet -r requirements/ml.txt
	touch $@

$(VENV)/.installed-dev: $(BIN)/python requirements/base.txt requirements/ml.txt requirements/production.txt requirements/dev.txt
	$(BIN)/pip install --quiet -r requirements/dev.txt
	touch $@ $(VENV)/.installed-run

install-run: $(VENV)/.installed-run
install-dev: $(VENV)/.installed-dev

run: install-run
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py create_demo_users
	$(BIN)/python manage.py load_demo_case
	$(BIN)/python manage.py recover
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

# For developers: the same with DEBUG on (Django's debug pages, static files re-read on change).
dev: install-run
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py create_demo_users
	$(BIN)/python manage.py load_demo_case
	$(BIN)/python manage.py recover
	DEBUG=1 $(BIN)/python manage.py runserver $(HOST):$(PORT)

# Debian's Chromium drives the browser tests (Playwright's own browser download is not used).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = "0" ]; then apt-get update -qq && apt-get install -y -qq chromium; \
		else echo "Chromium missing: run 'sudo apt-get install -y chromium' (browser tests will be skipped)"; fi; \
	fi

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install-dev chromium lint
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/pytest $(PYTEST_ARGS)

bench: install-dev
	$(BIN)/python bench/model_speed.py
	$(BIN)/python bench/e2e.py

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .ruff_cache
