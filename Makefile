# One place for the commands a developer (and CI) runs. `make help` lists them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?= -n 2 --dist loadgroup --maxfail=25  # loadgroup: xdist_group marks keep their modules apart

.PHONY: help install run cluster test test-unit test-postgresql lint format

help:
	@echo "make run              check the machine (scripts/deps), start Orchestry with its defaults (SQLite, 127.0.0.1:8000)"
	@echo "make cluster          start three nodes on one PostgreSQL (127.0.0.1:8000-8002); Ctrl-C stops them"
	@echo "make test             run the tests (ORCHESTRY_TEST_DB=postgresql for PostgreSQL)"
	@echo "make test-unit        the unit tests only (no Docker, nginx or server; under a minute)"
	@echo "make test-postgresql  the tests on a throwaway PostgreSQL server"
	@echo "make lint             ruff and mypy"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@scripts/deps
	$(BIN)/orchestry serve

cluster: $(STAMP)
	$(BIN)/python scripts/cluster

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# Unit tests: pure code and the database, no Docker, nginx or started server (those are marked `live` by
# tests/conftest.py). A bogus DOCKER_HOST makes a unit test that reaches Docker fail instead of passing slowly.
test-unit: $(STAMP)
	DOCKER_HOST=tcp://127.0.0.1:9 $(BIN)/pytest $(PYTEST_ARGS) -m "not live"

test-postgresql: $(STAMP)
	ORCHESTRY_TEST_DB=postgresql $(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@root="$$(mktemp -d)" && ln -s "$(CURDIR)" "$$root/orchestry" && \
	  MYPYPATH="$$root" $(BIN)/mypy --no-error-summary -p orchestry; status=$$?; rm -rf "$$root"; exit $$status

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
