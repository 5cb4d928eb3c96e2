# Two commands set everything up on a fresh machine:
#   make demo   -> .venv + data, then the main job (estimate the epsilon range on Fashion-MNIST, real data)
#   make test   -> .venv + data + test services, then the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
DATA_PKGS := dataset-fashion-mnist sword-text-kjv sword-text-sparv
TEST_PKGS := postgresql chromium chromium-driver
OUT ?= runs/demo

.PHONY: demo test lint venv data test-deps bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,integrations]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# Debian data packages: installed with apt-get when running as root and missing.
data:
	@bash scripts/apt-ensure.sh $(DATA_PKGS)

test-deps: data
	@bash scripts/apt-ensure.sh $(TEST_PKGS)

demo: venv data
	$(VENV)/bin/epsfinder estimate --task fashion-mnist-mlp --optimizer adam --out $(OUT)

test: venv test-deps
	$(VENV)/bin/ruff check src tests benchmarks experiments
	$(PY) -m pytest -q -x -p no:cacheprovider --durations=15

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks experiments
	$(VENV)/bin/ruff format --check src tests benchmarks experiments

bench: venv data
	$(PY) benchmarks/bench_histogram.py
	$(PY) benchmarks/bench_estimate.py

clean:
	rm -rf $(VENV) runs .pytest_cache
