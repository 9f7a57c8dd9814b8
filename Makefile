# Two entry points for people: `make run` and `make test`. Both build the virtualenv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
MFX := $(BIN)/meterfix
STAMP := $(VENV)/.installed

.PHONY: install run test lint types pytest fuzz bench clean

# Byte code is compiled at install: where PYTHONDONTWRITEBYTECODE is set (CI, containers) every
# process would otherwise compile each module it imports from source, every time (`meterfix
# --help` 5.0 s instead of 1.6 s on a loaded 2-core machine; each worker and sandbox the tests
# start pays it too).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/uv pip install -q --compile-bytecode -e '.[dev]'
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m compileall -q service handlers remediation sandbox >/dev/null
	touch $(STAMP)

install: $(STAMP)

# Web (port 4242) + worker + bundled sandbox (port 12111) on the embedded defaults: SQLite,
# file://./bucket, the bundled poller on (every 10 s) and the demo rules. Ctrl-C stops all three
# (the trap ignores further signals first: `kill 0` signals this shell too, and re-entering the
# trap for each one overflowed its stack), then waits for them: a worker busy with an item hands
# it back and exits within a second or two, so nothing outlives `make run`.
run: export MFX_POLLER ?= on
run: export MFX_POLL_INTERVAL ?= 10
run: export MFX_RULES ?= examples/rules.toml
run: install
	$(MFX) db upgrade
	mkdir -p bucket
	trap 'trap "" INT TERM; kill 0; wait' INT TERM EXIT; \
	$(MFX) sandbox --port 12111 --webhook-url http://127.0.0.1:4242/webhooks & \
	$(MFX) worker & \
	$(MFX) serve --port 4242

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

types: install
	$(BIN)/mypy

# Most of the suite waits on sockets, subprocesses and sleeps (one process keeps a 2-core machine
# about 30 % busy), so it runs on TEST_WORKERS processes (pytest-xdist), a test file each at a
# time (`loadfile`: a file's tests share its module state). `TEST_WORKERS=0` runs in one process.
# Three on 2 cores: 2,340 tests in 9:33 (the CPU 72 % busy) against 12:08 on two (66 %), on one
# machine, one after the other (2026-12-06).
TEST_WORKERS ?= 3

pytest: install
	$(BIN)/pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: lint types pytest

# The fuzz properties of `make test` (test_fuzz_*), with many more examples each.
fuzz: install
	MFX_FUZZ_EXAMPLES=$${MFX_FUZZ_EXAMPLES:-3000} $(BIN)/pytest -q -k fuzz -p no:cacheprovider --timeout 3600 \
		tests

# The service path (bench/service_path.py) starts its own moto S3 server and bundled sandbox,
# in its process on free ports: on SQLite, and again on PostgreSQL when MFX_BENCH_DATABASE_URL
# names a database (a schema of its own is made there and dropped; the script reads the
# variable itself, so make never echoes the URL and any password in it).
bench: install
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/uv pip install -q --compile-bytecode -e '.[dev,bench]'
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/remediate.py
	$(BIN)/python bench/batches.py
	$(BIN)/python bench/poller.py
	$(BIN)/python bench/pages.py
	$(BIN)/python bench/service_path.py --database-url ''
	$(if $(MFX_BENCH_DATABASE_URL),$(BIN)/python bench/service_path.py)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
