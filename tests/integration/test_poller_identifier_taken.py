"""A row the bundled poller refuses (our validation: a timestamp in milliseconds, an event
name no meter has) under the identifier of a row of the same object version that it sent:
Stripe took `k1` from the valid row (billed), so the refused row can never go out under `k1`,
nor under `k1-mfx1` (it may be a duplicate of the billed row). Its remediation left it out
as "sent since" (the poller's sends counted every row of its identifier), quarantining
nothing: its usage was seen by nobody (no quarantine row, no alert, not in digests). It is
quarantined under `identifier_taken`, waiting, with its run's alert, and never sent, the
valid row before or after it in the file. Real parts: the sandbox, moto S3, the bundled
poller, the worker; SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from service.jobs.store.quarantine_filter import QuarantineFilter
from service.jobs.store.rerun_queue import count_quarantine
from service.models import Alert, QuarantinedRow, RemediationRun
from service.poller.passes import run_poll_pass
from tests.integration.test_billing_safety import (  # noqa: F401 (`loop`: a fixture)
    bundled_poller,
    loop,
    rerun,
)
from tests.integration.test_e2e import Loop, _put, render


def _rows(refused_first: bool, how: str) -> list[dict[str, object]]:
    """`a` and `k1` valid, and `k1` again refused by our validation (`how`): a timestamp in
    milliseconds, or an event name no meter has."""
    now = int(time.time()) - 300
    base = {"event_name": "api_requests", "customer": "cus_alice"}
    valid = {**base, "identifier": "k1", "timestamp": now - 1, "value": "5"}
    refused = {**base, "identifier": "k1", "timestamp": now, "value": "7"}
    if how == "milliseconds":
        refused["timestamp"] = now * 1000
    else:
        refused["event_name"] = "legacy_calls"
    other = {**base, "identifier": "a", "timestamp": now, "value": "3"}
    pair = [refused, valid] if refused_first else [valid, refused]
    return [other, *pair]


def _billed(running: Loop) -> list[tuple[str, str]]:
    events = running.sandbox.meter_events()
    return sorted((str(e["identifier"]), str(e["payload"]["value"])) for e in events)


def _held(engine: Engine) -> list[QuarantinedRow]:
    with Session(engine) as session:
        return list(session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).all())


def _waiting(engine: Engine) -> int:
    with engine.connect() as connection:
        return count_quarantine(connection, QuarantineFilter(taken_again=False))


def _run_alert(engine: Engine, run_id: int) -> Alert:
    with Session(engine) as session:
        run = session.get(RemediationRun, run_id)
        assert run is not None
        return session.exec(select(Alert).where(Alert.alert_key == f"run:{run.run_key}")).one()


@pytest.mark.parametrize("refused_first", [False, True], ids=["valid_first", "refused_first"])
@pytest.mark.parametrize(
    ("fmt", "how"),
    [("csv", "milliseconds"), ("jsonl", "milliseconds"), ("csv", "unknown_event_name")],
)
def test_a_refused_row_under_an_identifier_the_poller_sent_from_its_file_is_quarantined(
    loop: Loop,  # noqa: F811 (the fixture imported above)
    refused_first: bool,
    fmt: str,
    how: str,
) -> None:
    _put(loop, f"day.{fmt}", render(_rows(refused_first, how), fmt))
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)  # a and k1 (valid) sent; the other k1 refused
        loop.drain()  # the refused rows remediated
        run_poll_pass(deps)  # whatever the run uploaded (nothing for k1)
        loop.drain()
    assert _billed(loop) == [("a", "3"), ("k1", "5")]
    [entry] = _held(loop.engine)
    assert (entry.identifier, entry.code) == ("k1", "identifier_taken")
    assert entry.record["mfx_code"] == "identifier_taken"
    assert entry.record["mfx_reason"] == entry.reason
    row = 3 if refused_first else 2  # the valid k1's (rows numbered from 1, `a` first)
    assert entry.reason.startswith(
        f"identifier 'k1' is also row {row} of 'usage/day.{fmt}', which the poller sent: "
        "Stripe took one event under it, a second would be billed twice; not sent ("
    ), entry.reason
    problem = "timestamp_in_future" if how == "milliseconds" else "no_meter"
    assert f"this row failed our checks: {problem}: " in entry.reason, entry.reason
    assert entry.taken_again is None and _waiting(loop.engine) == 1
    alert = _run_alert(loop.engine, entry.run_id)
    assert (alert.status, alert.severity, alert.code) == ("open", "warning", "identifier_taken")
    # a re-run (with the current rules) quarantines it again, never sends it
    rerun(loop)
    assert _billed(loop) == [("a", "3"), ("k1", "5")]
    assert [(r.identifier, r.record["mfx_code"]) for r in _held(loop.engine)] == [
        ("k1", "identifier_taken"),
        ("k1", "identifier_taken"),
    ]


class _Killed(BaseException):
    """Stands for SIGKILL inside a pass: nothing after it runs, nothing is marked failed."""


def test_a_refused_row_in_the_prefix_a_pass_resumes_after_is_quarantined_too(
    loop: Loop,  # noqa: F811 (the fixture imported above)
) -> None:
    """The pass dies as its second batch goes out: the first (the valid `k1`, the refused
    `k1` beside it, 98 more rows) was acknowledged. The pass that resumes after it left the
    refused `k1` out as sent (it repeats an identifier this version sent: the rows Stripe
    deduped are left out so), counted sent, handed to nobody; it is handed over and
    quarantined as above."""
    now = int(time.time()) - 300
    base = {"event_name": "api_requests", "customer": "cus_alice"}
    more = [{**base, "identifier": f"r{i}", "timestamp": now, "value": "1"} for i in range(150)]
    valid = {**base, "identifier": "k1", "timestamp": now - 1, "value": "5"}
    refused = {**base, "identifier": "k1", "timestamp": now * 1000, "value": "7"}
    _put(loop, "day.csv", render([valid, refused, *more], "csv"))
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
        report = run_poll_pass(deps)  # resumes after the first batch
        loop.drain()
    assert (report.rows, report.sent, report.failed_rows) == (152, 151, 1)
    billed = loop.sandbox.meter_events()
    assert len(billed) == 151
    assert [str(e["payload"]["value"]) for e in billed if e["identifier"] == "k1"] == ["5"]
    [entry] = _held(loop.engine)
    assert (entry.identifier, entry.code) == ("k1", "identifier_taken")
    assert entry.reason.startswith("identifier 'k1' is also row 1 of 'usage/day.csv', which ")
    assert "this row failed our checks: timestamp_in_future: " in entry.reason
    assert _waiting(loop.engine) == 1
