"""The quarantine entries of rows the bundled poller refused point at those rows of the
object, not at the row it sent under their identifier (b9db89d). usage/day.csv holds `a`,
`k1` in milliseconds (row 2), `k1` valid (row 3, sent) and `k1` naming no meter (row 4): both
refused rows were quarantined under `identifier_taken` as row 3, "also row 3", the row
numbers looked up by identifier among the rows the poller recorded (one an identifier: the
sent row's). Real parts: the sandbox, moto S3, the bundled poller, the worker; SQLite and
PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import pytest

from service.poller.passes import run_poll_pass
from tests.integration.test_billing_safety import (  # noqa: F401 (`loop`: a fixture)
    bundled_poller,
    loop,
)
from tests.integration.test_e2e import Loop, _put, render
from tests.integration.test_poller_identifier_taken import _billed, _held


def _value(record: dict[str, object]) -> object:
    payload = record.get("payload")
    return payload.get("value") if isinstance(payload, dict) else None


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_each_refused_row_under_a_sent_identifier_is_quarantined_as_its_own_row(
    loop: Loop,  # noqa: F811 (the fixture imported above)
    fmt: str,
) -> None:
    now = int(time.time()) - 300
    base = {"event_name": "api_requests", "customer": "cus_alice"}
    rows = [
        {**base, "identifier": "a", "timestamp": now, "value": "3"},
        {**base, "identifier": "k1", "timestamp": now * 1000, "value": "7"},
        {**base, "identifier": "k1", "timestamp": now - 1, "value": "5"},
        {**base, "identifier": "k1", "timestamp": now - 2, "value": "9"},
        {**base, "identifier": "x", "timestamp": now, "value": "4"},
    ]
    rows[3]["event_name"] = rows[4]["event_name"] = "legacy_calls"
    _put(loop, f"day.{fmt}", render(rows, fmt))
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)
        loop.drain()
    assert _billed(loop) == [("a", "3"), ("k1", "5")]
    held = sorted(
        (e.row_number, e.identifier, e.code, _value(e.record), e.reason) for e in _held(loop.engine)
    )
    assert [entry[:4] for entry in held] == [
        (2, "k1", "identifier_taken", "7"),
        (4, "k1", "identifier_taken", "9"),
        (5, "x", "no_meter", "4"),
    ]
    assert [entry[4].startswith("identifier 'k1' is also row 3 of ") for entry in held[:2]] == [
        True,
        True,
    ]


class _Killed(BaseException):
    """Stands for SIGKILL inside a pass: nothing after it runs, nothing is marked failed."""


def test_a_refused_row_in_the_prefix_a_pass_resumes_after_keeps_its_own_number(
    loop: Loop,  # noqa: F811 (the fixture imported above)
) -> None:
    """The pass dies as its second batch goes out; the pass resuming after the first hands
    over the refused `k1` (row 1) of its prefix: quarantined as row 1, not as the sent row 2."""
    now = int(time.time()) - 300
    base = {"event_name": "api_requests", "customer": "cus_alice"}
    more = [{**base, "identifier": f"r{i}", "timestamp": now, "value": "1"} for i in range(150)]
    valid = {**base, "identifier": "k1", "timestamp": now - 1, "value": "5"}
    refused = {**base, "identifier": "k1", "timestamp": now * 1000, "value": "7"}
    _put(loop, "day.csv", render([refused, valid, *more], "csv"))
    with bundled_poller(loop) as deps:
        sink: Any = deps.sink
        send_batch, calls = sink.send_batch, []

        def dying(batch: Any) -> int:
            calls.append(len(batch))
            if len(calls) == 2:
                raise _Killed
            return int(send_batch(batch))

        sink.send_batch = dying
        with pytest.raises(_Killed):
            run_poll_pass(deps)
        sink.send_batch = send_batch
        run_poll_pass(deps)  # resumes after the first batch
        loop.drain()
    [entry] = _held(loop.engine)
    assert (entry.row_number, entry.identifier, entry.code) == (1, "k1", "identifier_taken")
    assert entry.reason.startswith("identifier 'k1' is also row 2 of 'usage/day.csv', which ")
