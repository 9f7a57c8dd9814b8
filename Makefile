# Two entry points for people: `make run` and `make test`. Both build the virtualenv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
MFX := $(BIN)/meterfix
STAMP := $(VENV)/.installed

.PHONY: install run test lint types pytest bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/uv pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Web (port 4242) + worker on the embedded defaults: SQLite, file://./bucket, bundled sandbox.
run: install
	$(MFX) db upgrade
	trap 'kill 0' INT TERM EXIT; \
	$(MFX) sandbox --port 12111 & \
	$(MFX) worker & \
	$(MFX) serve --port 4242

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

types: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

test: lint types pytest

bench: install
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/uv pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/remediate.py
	$(BIN)/python bench/poller.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
