# distilflow: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORE := $(VENV)/.installed-core
DEV := $(VENV)/.installed-dev

.PHONY: install demo test lint results clean

# torch goes first, pinned: its CPU wheel is what the machine carries; any other order pulls
# several GB of CUDA packages. The demo needs the package alone; tests and lint add [dev].
# pip byte-compiles what it installs one file at a time (25 of torch's 34 s here); compileall
# does it on every core instead (15 s). Like pip, it carries on past the few files that are not
# valid Python 3.11 (templates, other versions' code), hence the `|| true`.
COMPILE := $(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true

$(CORE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile torch==2.13.0
	$(BIN)/python -m pip install -q --no-compile -e .
	$(COMPILE)
	touch $(CORE)

# The explorer's test loads the page in Debian's Chromium; without it (not root, no Debian) that
# one test skips and says why.
$(DEV): $(CORE)
	$(BIN)/python -m pip install -q --no-compile -e ".[dev]"
	$(COMPILE)
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: skipped"
	touch $(DEV)

install: $(DEV)

## demo: install, then run the whole pipeline (dvc repro under the retrain flow) on the embedded
## demo corpus (offline, SQLite/local)
demo: $(CORE)
	source $(BIN)/activate && distilflow run

## test: install, then run the whole test suite (slow real-weight tests included)
test: $(DEV)
	$(BIN)/python -m pytest

## results: install, then regenerate docs/RESULTS.md from the shared corpora (the first one's
## test split is the main test set; see bench/results.py; hours on 2 CPU cores):
## make results [CORPORA="main-corpus other-corpus ..."] [WORK=dir]
CORPORA ?= ../shared/data/asterisk-dev ../shared/data/festvox-ru ../shared/data/voices-unlabelled
results: $(CORE)
	$(BIN)/python -m bench.results $(CORPORA) $(if $(WORK),--work "$(WORK)")

lint: $(DEV)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

clean:
	rm -rf $(VENV) .prefect .cache data
