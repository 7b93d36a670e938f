# effbert: `make help` lists the targets. Every target that needs the environment creates it.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= seed
REPORTS ?= reports
# On machines without an NVIDIA driver, torch is installed first from this spec (a CPU build
# where one is on the package index); machines with a GPU get torch from pyproject.toml.
TORCH_CPU_SPEC ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install --quiet "$(TORCH_CPU_SPEC)"; fi
	$(PY) -m pip install --quiet -e ".[dev,lab]"
	# JupyterLab (from this venv) opens notebooks/*.py as notebooks: jupytext's default viewer
	$(VENV)/bin/jupytext-config --settings-file $(VENV)/etc/jupyter/labconfig/default_setting_overrides.json \
		set-default-viewer python >/dev/null
	# nbdime diffs and merges notebooks in git; drivers by absolute path, so any shell works
	if [ -d .git ]; then \
		$(VENV)/bin/nbdime config-git --enable >/dev/null && \
		git config diff.jupyternotebook.command "$(abspath $(VENV))/bin/git-nbdiffdriver diff" && \
		git config merge.jupyternotebook.driver "$(abspath $(VENV))/bin/git-nbmergedriver merge %O %A %B %L %P"; \
	fi
	touch $@

.PHONY: help setup lab sync smoke reproduce check test lint clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  (PROFILE=$(PROFILE): make reproduce PROFILE=<name of a file in params/>)"

setup: $(VENV)/.installed ## create .venv and install effbert with its lab and dev groups

LAB_FLAGS ?=
lab: setup ## open JupyterLab at the project root, on the notebooks (LAB_FLAGS="--port 8899 --no-browser", ...)
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) \
		--ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks $(LAB_FLAGS)

sync: setup ## pair notebooks/*.py with .ipynb (jupytext) after editing either
	$(VENV)/bin/jupytext --sync notebooks/[0-9]*.py

smoke: ## every notebook on the smoke profile (CPU, offline; about 4 min on 2 cores)
	$(MAKE) reproduce PROFILE=smoke

reproduce: setup ## run the study: PROFILE=seed (default; GPU + Hub), offline-gpu or smoke
	$(PY) -m effbert run --profile $(PROFILE) --reports-dir $(REPORTS)

check: setup ## validate a profile without running it (PROFILE=...)
	$(PY) -m effbert check --profile $(PROFILE)

test: setup ## run the tests (offline, CPU; GPU tests skip without a GPU)
	$(PY) -m pytest -q

lint: setup ## ruff over the package, tests and notebooks
	$(VENV)/bin/ruff check effbert tests notebooks scripts
	$(VENV)/bin/ruff format --check effbert tests notebooks scripts

clean: export REPORTS := $(REPORTS)
clean: ## remove a local run's generated files in REPORTS (never records or published reports), caches, paired .ipynb
	@PYTHONPATH=. $(PYTHON) -m effbert.folders clean
