"""A row a run over a copy of the day's file corrected and sent as `<id>-mfx1` is never sent
again under its own identifier from the day's file fixed by hand: the poller asked only the
runs over the day's file whether they corrected it (billed twice: `g` and `g-mfx1`). Real
parts: the sandbox (its error reports), a moto S3 bucket, the bundled poller in import mode,
the worker; SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlmodel import col, select

from service.models import ImportSet
from service.poller.passes import run_poll_pass
from tests.integration import refused_row_helpers as refused_row
from tests.integration.test_billing_safety import (  # noqa: F401 (`loop`: a fixture)
    bundled_poller,
    loop,
    originals_billed,
    reported,
)
from tests.integration.test_e2e import Loop


def _left_out_of_latest(running: Loop, key: str) -> object:
    """What the latest import set of `usage/<key>` says it left out as sent before."""
    with running.session() as session:
        query = select(ImportSet).where(ImportSet.source_object == f"usage/{key}")
        latest = session.exec(query.order_by(col(ImportSet.id).desc())).first()
    assert latest is not None and latest.detail is not None, latest
    return latest.detail.get("sent_by_other_versions")


def _failing(row: list[object], how: str) -> list[object]:
    """`row` fixed to cus_alice by hand, but failing our checks: its timestamp in
    milliseconds, or its value written `1,234`."""
    fixed = refused_row.fixed_to(row, "cus_alice")
    if how == "milliseconds":
        fixed[1] = int(str(row[1])) * 1000
    else:
        fixed[4] = "1,234"
    return fixed


@pytest.mark.parametrize("in_place", ["fixed", "failing"])
@pytest.mark.parametrize("how", ["milliseconds", "thousands"])
def test_a_refused_row_fixed_in_a_copy_then_in_the_days_file_is_billed_once(
    loop: Loop,  # noqa: F811 (the fixture imported above)
    how: str,
    in_place: str,
) -> None:
    """`g` (cus_ghost) refused by Stripe's report, quarantined; fixed to cus_alice in a copy,
    `day-fixed.csv`, but failing our checks: the copy's run corrects it and `g-mfx1` is
    billed. The day's file rewritten in place with `g` fixed properly (or as the copy held
    it: corrected, it went out as `g-mfx1` again, which Stripe dedupes for 24 hours only)
    then leaves `g` out, counted as sent before (with `a`), handed to no remediation."""
    with refused_row.quarantined(loop) as (deps, other, row):
        time.sleep(1)
        failing = _failing(row, how)
        refused_row.put(loop, "day-fixed.csv", [failing])
        run_poll_pass(deps)  # g to the failed-records file; its run corrects it
        loop.drain()
        run_poll_pass(deps)  # the corrected file sent: g-mfx1
        reported(loop)
        assert sorted(loop.accepted()) == ["a", "g-mfx1"]
        time.sleep(1)
        fixed = failing if in_place == "failing" else refused_row.fixed_to(row, "cus_alice")
        refused_row.put(loop, "day.csv", [other, fixed])
        report = run_poll_pass(deps)
        assert (report.sent, report.left_out, report.failed_rows) == (2, 2, 0), report
        loop.drain()
        run_poll_pass(deps)
        reported(loop)
    accepted = sorted(loop.accepted())
    assert accepted == ["a", "g-mfx1"], accepted
    assert originals_billed(loop) == Counter({"a": 1, "g": 1})
    assert loop.sandbox.duplicates() == []
    assert _left_out_of_latest(loop, "day.csv") == 2  # a and g: sent before
    entries = refused_row.entries(loop, "g")  # the report's, no new refusal
    assert [entry.customer for entry in entries] == ["cus_ghost"], entries


def test_a_row_corrected_in_the_days_file_then_fixed_in_a_copy_is_billed_once(
    loop: Loop,  # noqa: F811 (the fixture imported above)
) -> None:
    """The other way round: the poller refused `x` of the day's file (a timestamp in
    milliseconds), its run corrected it and `x-mfx1` was billed; the customer then put `x`
    fixed in a copy, `day-fixed.csv`: no version of the copy's key sent `x` and no run over
    it corrected it, so `x` went out too (billed twice). It is left out as sent before."""
    now = int(time.time())
    other: list[object] = ["a", now - 60, "api_requests", "cus_alice", "3"]
    row: list[object] = ["x", (now - 60) * 1000, "api_requests", "cus_alice", "5"]
    refused_row.put(loop, "day.csv", [other, row])
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)  # a sent, x refused by the poller
        loop.drain()  # x corrected
        run_poll_pass(deps)  # the corrected file: x-mfx1
        assert sorted(loop.accepted()) == ["a", "x-mfx1"]
        refused_row.put(loop, "day-fixed.csv", [[row[0], now - 60, *row[2:]]])
        report = run_poll_pass(deps)
        assert (report.sent, report.left_out, report.failed_rows) == (1, 1, 0), report
        loop.drain()
    accepted = sorted(loop.accepted())
    assert accepted == ["a", "x-mfx1"], accepted
    assert originals_billed(loop) == Counter({"a": 1, "x": 1})
    assert _left_out_of_latest(loop, "day-fixed.csv") == 1
