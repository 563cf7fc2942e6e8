# Ketepai: `make run` chats with the bot, `make test` runs every test. `make help` lists all targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Python 3.10 only (rasa 3.6 needs <3.11): python3.10 on PATH, else pyenv's newest 3.10.x.
PYTHON310 := $(shell for p in python3.10 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.10.*/bin/python3.10 2>/dev/null | sort -V | tail -1); do \
	$$p -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
# Rasa and its dependencies print pages of deprecation warnings that bury real errors.
RASA := PYTHONWARNINGS=ignore::DeprecationWarning,ignore::PendingDeprecationWarning $(VENV)/bin/rasa
KETEPAI := $(VENV)/bin/ketepai
DATA := nlu_data
# Everything the model is trained from; a change to any of them retrains.
MODEL_INPUTS := config.yml domain.yml $(shell find $(DATA) -type f 2>/dev/null | sort)
MODEL_STAMP := models/.trained

export TF_CPP_MIN_LOG_LEVEL ?= 2
export RASA_TELEMETRY_ENABLED ?= false
export SQLALCHEMY_SILENCE_UBER_WARNING ?= 1

.PHONY: help venv browser run run-prod train test test-py lint validate e2e clean names nlu-report kb-report

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	@if [ -z "$(strip $(PYTHON310))" ]; then \
	  echo "error: Python 3.10 not found (Rasa 3.6 needs 3.10)." >&2; \
	  echo "  Install it with pyenv: 'pyenv install 3.10.13', or your OS's python3.10 package." >&2; \
	  exit 1; fi
	@echo "==> venv on $(PYTHON310)"
	@[ -x $(PY) ] || $(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U 'pip>=24'
	# One resolve, pinned by constraints.txt, so nothing drifts past Rasa's pins.
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed ## create .venv on Python 3.10 and install everything

# Debian's headless chromium and a Chinese font for the page tests (tests/browser): installed
# with apt-get when missing (as root, or with password-less sudo); nothing to do when present.
# Without them the page tests skip, except in CI (CI=...), where they must run.
BROWSER_PKGS := chromium fonts-wqy-zenhei
browser: ## install chromium and a Chinese font for the page tests (apt-get, when missing)
	@if { [ -n "$$KTP_CHROMIUM" ] || command -v chromium >/dev/null 2>&1; } \
	    && fc-list :lang=zh 2>/dev/null | grep -q .; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo=sudo; \
	else \
	  echo "chromium or a Chinese font is missing; the page tests need them:" >&2; \
	  echo "  sudo apt-get install -y --no-install-recommends $(BROWSER_PKGS)" >&2; \
	  if [ -n "$$CI" ]; then exit 1; fi; \
	  echo "  (not CI: the page tests will be skipped)" >&2; exit 0; \
	fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "error: no apt-get; install chromium and a CJK font (e.g. WenQuanYi Zen Hei) yourself," \
	    "or point KTP_CHROMIUM at a chromium" >&2; \
	  [ -z "$$CI" ] || exit 1; exit 0; \
	fi; \
	echo "==> apt-get install $(BROWSER_PKGS)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$sudo apt-get update -qq && \
	$$sudo apt-get install -y -qq --no-install-recommends $(BROWSER_PKGS) >/dev/null && \
	chromium --version 2>/dev/null

names: $(VENV)/.installed ## regenerate lookups, synonyms and the jieba dictionary from kb/names.yml
	$(KETEPAI) nlu names

# Retrain only when the training inputs are newer than the newest model.
train: $(VENV)/.installed ## train the Rasa model if nlu_data/, config.yml or domain.yml changed
	@newest=$$(ls -t models/*.tar.gz 2>/dev/null | head -1); \
	if [ -n "$$newest" ] && [ -z "$$(find $(MODEL_INPUTS) -newer $$newest 2>/dev/null)" ]; then \
	  echo "==> model up to date: $$newest"; \
	else \
	  echo "==> training (inputs changed since $${newest:-no model})"; \
	  $(RASA) train --data $(DATA) --config config.yml --domain domain.yml --out models --quiet || exit 1; \
	  ls -t models/*.tar.gz | tail -n +4 | xargs -r rm --; \
	fi

run: train ## start Rasa, the action server and the gateway with the WeChat simulator (Ctrl-C stops all)
	KTP_SIMULATOR=$${KTP_SIMULATOR:-1} $(KETEPAI) run

# Production mode on this machine: needs DATABASE_URL (PostgreSQL), REDIS_URL, the WeChat secrets,
# KTP_DATA_KEY and KTP_SESSION_SECRET (see docs/deploy.md); KTP_GATEWAY_WORKERS, KTP_RASA_WORKERS.
run-prod: train ## production mode: N gateway workers + Rasa on PostgreSQL and Redis, supervised
	$(KETEPAI) run --prod

lint: $(VENV)/.installed ## ruff and mypy
	$(VENV)/bin/ruff check bot actions tests bench
	$(VENV)/bin/ruff format --check bot actions tests bench
	$(VENV)/bin/mypy

validate: $(VENV)/.installed ## rasa data validate
	$(RASA) data validate --data $(DATA) --domain domain.yml --config config.yml --fail-on-warnings

e2e: train ## conversation tests (rasa test) on tests/e2e
	$(RASA) test core --stories tests/e2e --model models --fail-on-prediction-errors --out var/results/e2e

test-py: train browser ## pytest (the page tests need `make browser`)
	$(VENV)/bin/pytest -q -ra

test: lint validate test-py e2e ## set up, then every test
	@echo "==> all tests passed"

kb-report: $(VENV)/.installed ## knowledge-base benchmark: precision, answered, handed over, latency p95
	$(PY) -m bench.kb_report $(addprefix --questions ,$(QUESTIONS))

# The pipeline in use (held-out, time, memory and latency are measured on it) against the TF-IDF
# baseline: 5 trainings and the full model, about 6 min on 6,052 examples. Candidates go after it,
# e.g. NLU_CONFIGS="config.yml bench/configs/diet.yml" (DIET: about 17 min per fold on 2 cores).
# Results cached in var/nlu-exp/; run niced, not part of `make test`.
# Quick run: make nlu-report NLU_ARGS="--max-folds 1".
NLU_CONFIGS ?= config.yml
NLU_ARGS ?=
nlu-report: $(VENV)/.installed ## NLU benchmark: 5-fold CV vs a TF-IDF baseline, held-out, time, memory, latency
	PYTHONWARNINGS=ignore::DeprecationWarning nice $(PY) -m bench.nlu_report \
	  $(addprefix --config ,$(NLU_CONFIGS)) $(NLU_ARGS) --out docs/nlu-report.md

clean: ## remove models, results and the venv
	rm -rf $(VENV) models var/results
