# Oyster: `make run` starts everything locally; `make test` installs what the suite needs and runs it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-fast-isolated lint format check-deps test-deps test-postgres test-container container-deps bench screenshots clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Oyster needs Python 3.11 or newer.")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	scripts/run-local.sh

test: test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run --settings=portal.settings_test
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The tests that need no registry, Azurite, Chromium or live server: a quick edit loop.
test-fast: $(STAMP)
	$(VENV)/bin/pytest -m "not live and not postgres" $(PYTEST_ARGS)

# test-fast with those programs hidden (a private mount namespace; needs root or user namespaces),
# as on a machine that has none of them.
test-fast-isolated: $(STAMP)
	scripts/test-fast-isolated.sh

# System packages (Debian), Node tools and the venv the suite needs; each step only when missing.
test-deps: $(STAMP)
	scripts/install-test-deps.sh

# The whole suite again on PostgreSQL (Debian's server, started by the script), plus the tests
# marked `postgres` (two portal instances and two workers on one database, advisory locks).
test-postgres: test-deps
	scripts/with-postgres.sh $(VENV)/bin/pytest -m "not container" $(PYTEST_ARGS)

# The image built from the Dockerfile and the compose stack run end to end with Debian's podman
# (a few minutes; the first run also builds stand-in base images with debootstrap).
test-container: container-deps
	$(VENV)/bin/pytest -m container tests/test_container.py $(PYTEST_ARGS)

container-deps: $(STAMP)
	scripts/install-container-deps.sh

# The README's pictures: a seeded registry and portal, each main page rendered in Debian's
# Chromium into docs/screenshots/ (about a minute and a half).
screenshots: test-deps
	$(PY) scripts/screenshots.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) staticfiles node_modules
