"""How many examples a property test runs: a bounded count in `make test` (seconds), many
more when `MFX_FUZZ_EXAMPLES=N` is set (a longer fuzz run, e.g. `make fuzz`)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES_VARIABLE = "MFX_FUZZ_EXAMPLES"


def fuzz_examples(default: int) -> int:
    """`default` examples, or MFX_FUZZ_EXAMPLES when set to a positive number."""
    value = os.environ.get(FUZZ_EXAMPLES_VARIABLE, "").strip()
    return int(value) if value.isascii() and value.isdigit() and int(value) > 0 else default


def fuzz_settings(default: int) -> settings:
    """Settings for a property test over a real server or database: no per-example deadline
    (I/O timing varies), and fixtures built once per test, shared by its examples."""
    return settings(
        max_examples=fuzz_examples(default),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
