# U-Hop companion: two commands do everything from a fresh clone.
#   make book     build the website (every notebook executed at its default parameters)
#   make test     unit tests + every notebook through papermill + a strict book build
#   make results  run every experiment notebook at full size (writes results/)
# Each target creates .venv and installs the pinned stack when needed; a re-run with
# everything installed skips the install (the stamp below is newer than its inputs).

SHELL        := /bin/bash
PYTHON       ?= python3.11
VENV         := .venv
BIN          := $(VENV)/bin
STAMP        := $(VENV)/.uhop-installed
EXTRAS       := data,book,test,cluster
BUILD        := _build
JB_FLAGS     := -W -n --keep-going
PYTEST_ARGS  ?=
NPROC        := $(shell nproc 2>/dev/null || echo 2)

# Data root: the offline copies beside the checkout when they exist (CI has them).
ifeq ($(origin UHOP_DATA), undefined)
  ifneq ($(wildcard ../shared/data/README.md),)
    UHOP_DATA := $(abspath ../shared/data)
  endif
endif
export UHOP_DATA
# The offline copies mean this machine has no internet: fail fast instead of trying downloads.
ifneq ($(UHOP_DATA),)
  export UHOP_OFFLINE ?= 1
endif
export PYTHONHASHSEED := 0
# Notebook kernels and tools resolve `python`/`jupyter` from the project's environment.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help install browser book book-strict test unit results clean clean-all

help:
	@sed -n '1,6p' Makefile

$(STAMP): pyproject.toml constraints.txt
	@set -e; start=$$(date +%s); \
	if [ ! -x $(BIN)/python ]; then \
	  echo "[make] creating $(VENV) with $(PYTHON)"; \
	  $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV); \
	fi; \
	echo "[make] installing the pinned stack into $(VENV) (constraints.txt)"; \
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "is ignored" || true; \
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]" 2>&1 | grep -v "is ignored" ; \
	test $${PIPESTATUS[0]} -eq 0; \
	$(BIN)/python -c "import uhop, torch, entmax, jupyter_book, papermill, jupytext; print('[make] uhop', uhop.__version__, '| torch', torch.__version__)"; \
	touch $(STAMP); \
	echo "[make] install took $$(( $$(date +%s) - start )) s"

install: $(STAMP)

# Build the website; every notebook is executed (cache mode: unchanged notebooks are reused).
book: $(STAMP)
	@set -o pipefail; mkdir -p $(BUILD); rc=0; \
	$(BIN)/jupyter-book build . $(JB_FLAGS) 2>&1 | tee $(BUILD)/book-build.log || rc=$$?; \
	echo $$rc > $(BUILD)/book-build.rc; \
	echo "[make] book: $(abspath $(BUILD))/html/intro.html (build exit code $$rc)"; \
	exit $$rc

# Strict build used by `make test`: never stops make, the result is checked by
# tests/test_book.py so that the run ends with pytest's summary line.
book-strict: $(STAMP)
	@mkdir -p $(BUILD); rc=0; start=$$(date +%s); \
	echo "[make] strict book build (jupyter-book build . $(JB_FLAGS))"; \
	$(BIN)/jupyter-book build . $(JB_FLAGS) > $(BUILD)/book-build.log 2>&1 || rc=$$?; \
	echo $$rc > $(BUILD)/book-build.rc; \
	grep -E "WARNING|ERROR|build succeeded|build finished" $(BUILD)/book-build.log | tail -n 40 || true; \
	echo "[make] strict book build exit code $$rc in $$(( $$(date +%s) - start )) s"

# The rendered-site check needs a headless Chromium. Installed with apt-get when it is missing and this user may
# install system packages (root, or sudo without a password); otherwise the exact command to run is printed.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	    || command -v google-chrome >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "[make] the site check needs Chromium, which is not installed and cannot be installed by this user."; \
	     echo "[make] install it once with:  sudo apt-get install chromium   (Debian/Ubuntu), then re-run make test"; \
	     exit 1; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "[make] the site check needs Chromium; install it with your system's package manager"; exit 1; fi; \
	echo "[make] installing chromium for the rendered-site check (apt-get)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null

# Everything: the strict book build first, then pytest (unit tests, every notebook through
# papermill, the build result, the Chromium site check). Ends with pytest's summary line.
test: browser book-strict
	UHOP_REQUIRE_BOOK=1 $(BIN)/python -m pytest -n $(NPROC) --durations=15 $(PYTEST_ARGS) tests

# Unit tests only (fast inner loop; no notebooks, no book).
unit: $(STAMP)
	$(BIN)/python -m pytest -n $(NPROC) -m "not notebook and not book" $(PYTEST_ARGS) tests

# Full-size experiment runs through papermill (see notebooks/full_size.yml).
results: $(STAMP)
	$(BIN)/python -m uhop.reproduce run $(RESULTS_ARGS)

clean:
	rm -rf $(BUILD)

clean-all: clean
	rm -rf $(VENV)
