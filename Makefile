# StreamFlow Features. `make` alone lists the targets.
# Every target that needs the database starts the embedded PostgreSQL first
# (unless POSTGRES_HOST points at your own server).

SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
SF := $(VENV)/bin/streamflow
STAMP := $(VENV)/.installed-stamp
AS_OF ?=
AS_OF_ARG := $(if $(AS_OF),--as-of $(AS_OF),)

.PHONY: help all install db-up db-down db-status seeds ingest build docs validate apply \
        training-data materialize check-skew serve test lint bench clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}'

all: install ingest build validate apply training-data materialize ## Set everything up and run the whole pipeline
	@echo "Done. Try: make serve, then curl http://127.0.0.1:8000/features/7590-VHVEG (a user of the real exports: use any user_id of your data)"

install: $(STAMP) ## Create .venv and install the pinned package (re-runs when pyproject.toml changes)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

db-up: install ## Start the embedded PostgreSQL (no-op if running or if POSTGRES_HOST is set)
	$(SF) db up

db-down: install ## Stop the embedded PostgreSQL
	$(SF) db down

db-status: install ## Show which PostgreSQL is used and whether it is up
	$(SF) db status

seeds: install ## Generate sample exports into data/sample (USERS, MONTHS, SEED override)
	$(SF) generate --out data/sample --users $(or $(USERS),5000) --months $(or $(MONTHS),3) --seed $(or $(SEED),42)

ingest: install ## Load every month_NNN folder of SEEDS_DIR into the raw schema
	$(SF) ingest-all

build: install ## dbt build: staging views and incremental monthly snapshot marts, with tests
	$(SF) build

docs: install ## Build dbt's documentation site (lineage graph) and print its path
	$(SF) docs

validate: install ## Great Expectations gate on the marts (AS_OF=YYYY-MM-DD for one month)
	$(SF) validate $(AS_OF_ARG)

apply: install ## feast apply: register entities, sources, views and services
	$(SF) apply

training-data: install ## Point-in-time training set -> data/processed/training_df.csv (AS_OF optional)
	$(SF) training-data $(AS_OF_ARG)

materialize: install ## Newest validated snapshot of every user into the online store
	$(SF) materialize

check-skew: install ## Online vectors vs offline point-in-time vectors; non-zero exit on mismatch
	$(SF) check-skew

serve: install ## Run the feature API on 127.0.0.1:8000 (API_HOST, API_PORT, API_WORKERS)
	$(SF) serve

test: install ## Run the test suite (starts its own PostgreSQL database)
	$(VENV)/bin/pytest

lint: install ## ruff
	$(VENV)/bin/ruff check src tests scripts benchmarks feature_repo

bench: install ## Benchmarks against plain Feast (see benchmarks/)
	$(VENV)/bin/python benchmarks/run_all.py

clean: ## Remove generated data and build output (keeps the database)
	rm -rf data/processed data/bench dbt_project/target dbt_project/logs expectations/gx/uncommitted site
