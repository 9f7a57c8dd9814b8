"""The v2 stream's timestamp text: the poller's fast formatting gives exactly what the
calendar (`datetime.strftime`) gives, for every second from year 1 to 9999."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from remediation.fieldvalues import rfc3339

FIRST_SECOND, LAST_SECOND = -62_135_596_800, 253_402_300_799


@given(st.integers(min_value=FIRST_SECOND, max_value=LAST_SECOND))
def test_rfc3339_is_the_calendar_text(ts: int) -> None:
    assert rfc3339(ts) == datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_rfc3339_at_the_edges() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(-1) == "1969-12-31T23:59:59Z"
    assert rfc3339(1_796_039_695) == "2026-11-30T11:54:55Z"
    assert rfc3339(LAST_SECOND) == "9999-12-31T23:59:59Z"
