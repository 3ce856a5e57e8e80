# Quickstart: `make demo` and `make test` on a fresh machine with Python 3.11 and pip.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow fuzz install lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/changekit demo --out outputs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

# the slow tier (marker `slow`: full-size goldens and configs, longer learning runs, the heavier exports; about 2
# minutes); CI runs it after `make test`
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests

# the long fuzz profile: random seeds, 20x the cases of `make test`; a failing case is saved under tests/fuzz/corpus/
fuzz: $(STAMP)
	CHANGEKIT_FUZZ=long $(BIN)/python -m pytest -q tests/fuzz --hypothesis-show-statistics

lint: $(STAMP)
	$(BIN)/ruff check changekit tests benchmarks

clean:
	rm -rf outputs .pytest_cache
