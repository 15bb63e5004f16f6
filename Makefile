# Torghut — the two commands:  make demo   |   make test
# Both are self-contained on a fresh Debian 12 machine: they create .venv, install the pinned
# dependencies (once per pyproject.toml change) and the system packages the services need.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3.11
VENV        ?= .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.torghut-installed
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
# kustomize renders infra/k8s/overlays for the manifest check (python -m infra.k8s.check); pinned,
# built from the Go module proxy into .venv/bin by the test target only (the demo does not need it). Needs Go >= 1.22 (this machine's /usr/local/go).
KUSTOMIZE_VERSION := v5.7.1
KUSTOMIZE_STAMP   := $(VENV)/.kustomize-$(KUSTOMIZE_VERSION)
GO                ?= $(shell command -v go || echo /usr/local/go/bin/go)

.PHONY: help demo test lint typecheck pytest venv sysdeps services-up services-down services-status

help:
	@echo "make demo            run the demo pipeline on embedded defaults"
	@echo "make test            ruff check + mypy (strict) + pytest against real services"
	@echo "make services-up     start Kafka, S3 (SeaweedFS) and Postgres and keep them running"
	@echo "make services-down   stop them"
	@echo "make services-status"

# ---------------------------------------------------------------- environment

# System packages: only what is missing (checked by command, not by apt). Debian's prometheus
# package provides promtool, which checks and unit-tests infra/prometheus (tests/ops); chromium
# and chromium-driver drive the browser tests (tests/console, tests/backtest), wrk the API bench.
sysdeps:
	@missing=(); \
	command -v curl >/dev/null || missing+=(curl); \
	command -v gcc >/dev/null || missing+=(gcc); \
	command -v java >/dev/null || missing+=(openjdk-17-jre-headless); \
	command -v mvn >/dev/null || missing+=(maven); \
	dpkg -s postgresql-15 >/dev/null 2>&1 || missing+=(postgresql-15); \
	command -v $(PYTHON_BOOT) >/dev/null || missing+=(python3.11); \
	$(PYTHON_BOOT) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3.11-venv); \
	$(PYTHON_BOOT) -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null || missing+=(python3.11-dev); \
	command -v $(GO) >/dev/null || missing+=(golang-go); \
	command -v promtool >/dev/null || missing+=(prometheus); \
	command -v chromium >/dev/null || missing+=(chromium); \
	command -v chromedriver >/dev/null || missing+=(chromium-driver); \
	command -v wrk >/dev/null || missing+=(wrk); \
	if [ $${#missing[@]} -gt 0 ]; then \
	  echo "installing system packages: $${missing[*]}"; \
	  if ! dpkg -s postgresql-common >/dev/null 2>&1; then \
	    $(SUDO) mkdir -p /etc/postgresql-common; \
	    [ -f /etc/postgresql-common/createcluster.conf ] || \
	      echo "create_main_cluster = false" | $(SUDO) tee /etc/postgresql-common/createcluster.conf >/dev/null; \
	  fi; \
	  $(SUDO) apt-get update -qq; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$${missing[@]}"; \
	fi

$(PY):
	@command -v $(PYTHON_BOOT) >/dev/null && $(PYTHON_BOOT) -c 'import ensurepip, venv' 2>/dev/null || $(MAKE) --no-print-directory sysdeps
	$(PYTHON_BOOT) -m venv $(VENV)

# The hot paths are compiled (Cython, setup.py) by this install: rebuild when they change.
$(STAMP): pyproject.toml setup.py $(wildcard operators/*.pyx torghut/ta/*.pyx torghut/clickhouse/*.pyx) | sysdeps $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

$(KUSTOMIZE_STAMP): | sysdeps $(PY)
	GOBIN=$(abspath $(VENV)/bin) $(GO) install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	@touch $@

venv: $(STAMP)

# ---------------------------------------------------------------- the two commands

demo: venv
	$(PY) -m dataflows.demo

test: sysdeps venv lint typecheck pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-logo --no-cache

typecheck: venv
	$(VENV)/bin/mypy

# Services are provisioned by tests/conftest.py on demand (and stopped again at the end unless
# they were already running). pytest's exit code 5 (no tests collected) fails the target too.
pytest: venv sysdeps $(KUSTOMIZE_STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# ---------------------------------------------------------------- conveniences

services-up: sysdeps venv
	infra/local/services.sh up

services-down:
	infra/local/services.sh down

services-status:
	infra/local/services.sh status
