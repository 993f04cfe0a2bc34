# jaxseq developer tasks. Every target runs tools from .venv explicitly.

PYTHON = python3
VENV = .venv
BIN = $(VENV)/bin

.PHONY: venv train test test-all lint format

# Creates .venv if missing and (re)installs the project only when pyproject.toml is newer
# than the stamp file, so repeat runs cost nothing.
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev,plot,data,tensorboard]"
	touch $(VENV)/.installed

train: venv
	$(BIN)/python -m experiments.adding

test: venv
	$(BIN)/python -m pytest -q -m "not slow" -n 2

test-all: venv
	$(BIN)/python -m pytest -q -n 2

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
