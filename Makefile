# Two commands do everything on a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster
export ITAP_CONFIG ?= $(CURDIR)/configs/itap.yaml
export ITAP_DB_PATH ?= $(CURDIR)/data/itap.duckdb

.PHONY: install dev demo test ui bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev,scale]"
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

$(DAGSTER_HOME)/dagster.yaml: configs/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp configs/dagster.yaml $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m itap_assets.demo

test: dev
	.ci/install_browser.sh
	.ci/install_postgres.sh
	$(BIN)/python -m pytest -q -n 2 --maxschedchunk 1

bench: dev
	$(BIN)/python bench/pipeline.py all
	$(BIN)/python bench/real.py all

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

clean:
	rm -rf $(DAGSTER_HOME) data/itap.duckdb data/itap.duckdb.wal
