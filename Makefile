# `make run`: set up and run the pipeline (dvc repro). `make test`: set up and run the tests.
# Both create .venv with the pinned packages of requirements.lock the first time.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
# pip on some machines warns about every missing local index folder; keep its real messages only.
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: setup run test bench mutate preset lint format deps check-params submit cluster-status clean-venv

setup: $(VENV)/.installed .dvc/config

$(VENV)/.installed: requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing pinned packages into $(VENV) (a few minutes the first time)..."
	@$(BIN)/python -m pip install -q -r requirements.lock 2>&1 | $(QUIET_PIP)
	@$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | $(QUIET_PIP)
	@touch $@

.dvc/config:
	@if [ -d .git ]; then dvc init -q; else dvc init -q --no-scm; fi
	@dvc config core.analytics false

check-params: setup
	@python -m lmcot.config params.yaml

run: setup check-params
	dvc repro

test: setup  # one worker per core (pytest-xdist), each test file on one worker; the slowest tests listed
	python -m pytest -n logical --dist loadfile --no-loadscope-reorder --durations=15

submit: setup  # make submit ARGS="-S 'train.sweep.lrs=[0.01,0.1]' --partition gpu --gpus 1" (README: Slurm)
	python -m lmcot.cluster submit $(ARGS)

cluster-status: setup
	python -m lmcot.cluster status

preset: setup  # make preset NAME=ferbach_mnist
	python presets/run.py $(NAME)

bench: setup
	python benchmarks/run.py
	python benchmarks/lstm_kernels.py

mutate: setup  # mutation score of the science modules: reports/mutation.md (tests what changed since the committed verdicts; all mutants: about 2.5 hours on 2 cores; not in CI)
	@python -c "import mutmut" 2>/dev/null || python -m pip install -q mutmut==3.8.1
	python benchmarks/mutation.py

deps: setup  # rewrite each stage's code deps in dvc.yaml as the files it imports (tools/stage_deps.py)
	python tools/stage_deps.py --fix

lint: setup
	ruff check . && ruff format --check .

format: setup
	ruff check --fix . && ruff format .

clean-venv:
	rm -rf $(VENV)
