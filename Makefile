# The two commands of the README:
#   make demo   bootstrap, start the local stack, run the learning loop end to end, write a report
#   make test   bootstrap, start the stack, run every test, stop the stack (if this run started it)
SHELL := /bin/bash
CACHE ?= $(if $(DRIFTLINE_CACHE),$(DRIFTLINE_CACHE),$(HOME)/.cache/driftline)
VENV ?= $(if $(DRIFTLINE_VENV),$(DRIFTLINE_VENV),$(CACHE)/venv)
BIN := $(VENV)/bin
PYTEST_ARGS ?= tests

.PHONY: setup demo test stack-up stack-down stack-status lint

setup:
	@bash compose/setup.sh

# the README's main job: stack up (idempotent), initial adapters, workers + updater, the replayed
# stream with the emerging class, live progress, report in .run/demo/<timestamp>/ (DEMO_ARGS=--quick)
DEMO_ARGS ?=
demo: setup
	$(BIN)/driftline demo $(DEMO_ARGS)

# A stack that was already running (a developer's shared one) is left running; one started here
# is stopped again even when tests fail, and pytest's exit code is what make returns.
test: setup
	@set -u; \
	if $(BIN)/driftline stack status >/dev/null 2>&1; then started=0; else started=1; fi; \
	status=0; \
	$(BIN)/driftline stack up || status=$$?; \
	if [ $$status -eq 0 ]; then $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; fi; \
	if [ $$started -eq 1 ]; then $(BIN)/driftline stack down || true; fi; \
	exit $$status

stack-up: setup
	$(BIN)/driftline stack up

stack-down:
	$(BIN)/driftline stack down

stack-status:
	$(BIN)/driftline stack status

lint:
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
