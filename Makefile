# labkit — two commands on a fresh machine (Python 3.11): `make report` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.labkit-installed
PROFILE ?= tiny
PYTEST_ARGS ?=

.PHONY: report test test-fast lab venv tiny bench clean-reports help

help:
	@echo "make report   set up .venv, build the tiny models, run the whole workbook into reports/"
	@echo "make test     set up .venv, run the whole test suite (slow tests included)"
	@echo "make lab      open JupyterLab on notebooks/ with the project's kernel"
	@echo "make bench    run the benchmarks in bench/"

# (Re)create the virtual environment when it is missing or the pins changed.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name labkit --display-name "Python 3 (labkit)" >/dev/null
	@touch $(STAMP)

venv: $(STAMP)

tiny: $(STAMP)
	$(BIN)/labkit tiny llama baichuan

report: tiny
	$(BIN)/labkit run --profile $(PROFILE)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lab: $(STAMP)
	cd notebooks && ../$(BIN)/jupyter lab --notebook-dir=. --ServerApp.kernel_spec_manager_class=jupyter_client.kernelspec.KernelSpecManager $(if $(filter 0,$(shell id -u)),--allow-root)

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-reports:
	find reports -mindepth 1 -maxdepth 1 ! -name .gitkeep ! -name README.md -exec rm -rf {} +
