# SAS Fleet — one entry point for every task. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# The application installs exactly what uv.lock records (`uv sync --frozen`), the same
# versions on every machine, in CI and in the image; `make lock` moves them on purpose.
# uv itself is in the lock's dev group: bootstrapped once with pip, then kept by the sync.
UV := $(BIN)/uv
UV_VERSION = $(shell sed -n '/^name = "uv"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' uv.lock)
export UV_PROJECT_ENVIRONMENT := $(VENV)

# Strict editable installs link each file, so a new module needs a reinstall: the
# package folders' mtimes (which change when files are added) are prerequisites too.
PACKAGE_DIRS := $(wildcard api scheduler agent supervisor shared shared/*/ shared/state/lua cli tools examples)

# A venv without pip (ensurepip alone takes ~10 s here), uv put in it by the Python's own
# pip; where that Python has no pip module, the venv gets one first.
$(UV):
	$(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -m pip --python $(BIN)/python install --quiet uv==$(UV_VERSION) \
		|| { echo "installing pip into $(VENV) first"; $(PYTHON) -m venv $(VENV) \
		&& $(BIN)/pip install --quiet uv==$(UV_VERSION); }

$(STAMP): pyproject.toml uv.lock $(PACKAGE_DIRS) | $(UV)
	$(UV) sync --frozen --quiet --reinstall-package sasfleet
	rm -f $(PEERS)
	touch $(STAMP)

venv: $(STAMP) ## Create the virtual environment and install the project

services: ## Make RabbitMQ (5672) and Redis (6379) reachable, starting them where missing
	bash deploy/services.sh

demo: $(STAMP) services ## The main job: 1,000+ jobs through all three services, an agent killed
	$(BIN)/sasfleet demo

# The test tiers, one folder each under tests/, fastest first. `make test` runs them in
# this order and stops at the first that fails (a broken unit test shows in seconds, not
# after the system tier's minutes).
TIERS := unit store system deploy chaos
run_tiers = set -e; for tier in $(TIERS); do echo "=== tests/$$tier"; $(1) tests/$$tier; done

test: $(STAMP) services ## Every tier in turn (unit, store, system, deploy, chaos); stops at the first that fails
	@$(call run_tiers,$(BIN)/pytest)

test-unit: $(STAMP) ## Pure logic, no services (seconds)
	$(BIN)/pytest tests/unit

test-store: $(STAMP) services ## The state scripts on a real Redis and a private Redis Cluster
	$(BIN)/pytest tests/store

test-system: $(STAMP) services ## The services as real processes on real RabbitMQ and Redis
	$(BIN)/pytest tests/system

test-deploy: $(STAMP) services ## Image, compose, Kubernetes and the installed wheel, against the code
	$(BIN)/pytest tests/deploy

test-chaos: $(STAMP) services ## The chaos suite's short form (`make chaos`: the full one)
	$(BIN)/pytest tests/chaos

# Not in CI: the same tiers in a second environment holding the newest releases that
# pyproject.toml's ranges allow (uv.lock is not read or changed), so that an upstream
# release that breaks us is seen before `make lock` takes it.
LATEST := .venv-latest

test-latest: services | $(UV) ## Every tier against the newest releases pyproject.toml allows (not the lock)
	rm -rf $(LATEST)
	$(UV) venv --quiet $(LATEST)
	VIRTUAL_ENV=$(LATEST) $(UV) pip install --quiet --refresh --upgrade --group dev -e .
	VIRTUAL_ENV=$(LATEST) $(UV) pip list --format freeze > $(LATEST)/versions.txt
	@echo "newest releases: $(LATEST)/versions.txt"
	@$(call run_tiers,$(LATEST)/bin/pytest)

lint: $(STAMP) ## ruff, ruff format, mypy --strict and the architecture's import contracts (pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP) ## Apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schema: $(STAMP) ## Refresh the submit message's JSON Schema in docs/submit-message.md
	$(BIN)/python -m sasfleet.shared.messages.schema docs/submit-message.md

bench: $(STAMP) services ## Benchmark: N one-step echo jobs through the real services
	$(BIN)/sasfleet bench

PEERS := $(VENV)/.peers

$(PEERS): $(STAMP)
	$(UV) sync --frozen --quiet --group peers
	touch $(PEERS)

lock: | $(UV) ## Move uv.lock to the newest releases pyproject.toml allows (then review and commit it)
	$(UV) lock --upgrade --refresh
	rm -f $(STAMP)

bench-compare: $(PEERS) services ## SAS Fleet beside Celery, Dramatiq and taskiq; then killed and frozen workers
	$(BIN)/python -m bench.compare
	$(BIN)/python -m bench.recovery

bench-memory: $(STAMP) services ## An agent's RSS over 100,000 jobs (fails above 10% growth)
	$(BIN)/python -m bench.memory

scale: $(STAMP) services ## Scale test: the same workload through 1, 2, 4 and 8 agent processes
	$(BIN)/sasfleet scale

chaos: $(STAMP) services ## Chaos suite: 2,000 jobs under 22 faults (kills, restarts, garbage)
	$(BIN)/sasfleet chaos --jobs 2000 --faults 22

# The whole fleet in containers (deploy/compose.yaml; Docker with Compose v2). The first
# `make up` writes deploy/.env with random passwords (deploy/new-env.sh).
COMPOSE := docker compose -f deploy/compose.yaml
AGENTS ?= 2

up: ## The fleet in containers: RabbitMQ, Redis, Jaeger, services, AGENTS=2 agents
	sh deploy/new-env.sh
	$(COMPOSE) up -d --build --scale agent=$(AGENTS)

down: ## Stop and remove the containers of `make up` (the data volumes stay)
	$(COMPOSE) down

.PHONY: up down

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) $(LATEST) .pytest_cache .mypy_cache .ruff_cache build *.egg-info

.PHONY: help venv lock services demo test test-unit test-store test-system test-deploy test-chaos test-latest lint format schema bench bench-compare bench-memory scale chaos clean
