# midoflow — the README's interface. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: setup demo test unit bench lint clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) -m midoflow.demo $(ARGS)

test: setup
	@bash scripts/test.sh $(ARGS)

unit: setup
	@$(PY) -m pytest -q tests/unit $(ARGS)

bench: setup
	@bash scripts/bench.sh $(ARGS)

lint:
	@$(VENV)/bin/ruff check midoflow topologies tests benchmarks

clean:
	@bash scripts/cleanup.sh
