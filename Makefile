# The README's two commands live here. The virtual environment is made once and reused:
# its stamp depends on pyproject.toml, so re-running does not reinstall.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= tiny
OUT ?= outputs/course
PYTEST_ARGS ?=

.PHONY: course test setup clean-data help

help:
	@echo "make course  # set up, then run the whole course headless (PROFILE=$(PROFILE), OUT=$(OUT))"
	@echo "make test    # set up, then run the full test suite"

$(VENV)/.stamp: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

setup: $(VENV)/.stamp

# make's start, read when make reads this file (before the setup), so that course.json's
# since_make_s counts the install too
STARTED := $(shell date +%s)

course: setup
	CMMC_MAKE_STARTED=$(STARTED) $(VENV)/bin/cmmc course --profile $(PROFILE) --out $(OUT)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean-data:
	rm -rf data/synthetic data/cache runs outputs
