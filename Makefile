# One task runner, the same commands locally and in CI.
#   make demo   set everything up and run the demo
#   make test   set everything up and run lint + all tests (unit, integration, e2e)
#   make lint   ruff, ruff format --check, mypy, import-linter, compose validation

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup setup-test demo test lint unit integration e2e soak down clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, found {sys.version.split()[0]}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)
	scripts/setup-system.sh demo

setup-test: $(STAMP)
	scripts/setup-system.sh test

demo: setup
	$(BIN)/featurestream demo

lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	docker-compose -f docker-compose.yml config -q

unit: setup
	$(BIN)/pytest tests/unit

integration: setup
	$(BIN)/pytest tests/integration

e2e: setup-test
	out="$$(scripts/container-runtime.sh)" && eval "$$out" && $(BIN)/pytest tests/e2e

test: lint
	out="$$(scripts/container-runtime.sh)" && eval "$$out" && $(BIN)/pytest tests --durations=30

down:
	$(BIN)/featurestream down

clean:
	rm -rf $(VENV) .featurestream .mypy_cache .ruff_cache .pytest_cache .hypothesis feature_repo/data

soak: setup-test  # the long fault suite (not in CI): more events, more kills
	out="$$(scripts/container-runtime.sh)" && eval "$$out" && \
	FAULTS_EVENTS=$${FAULTS_EVENTS:-30000} FAULTS_KILLS=$${FAULTS_KILLS:-12} \
	FAULTS_REPORT=bench/results/soak.json \
	$(BIN)/pytest tests/e2e/test_faults.py -k nothing_lost -q
