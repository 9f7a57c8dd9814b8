"""Stripe's error reports as the bundled poller's loop meets them: a report's codes read as a
failed-records file's are, and its counts held to the most it names. Each through the real
app, worker, sandbox and bucket (`loop`)."""

# ruff: noqa: F811  (the fixture imported from the module that defines it)
from __future__ import annotations

import time
from typing import Any

import pytest
from sqlmodel import select

from sandbox.events import build_error_report_event
from service.models import Alert, ErrorReport, QuarantinedRow
from service.poller.passes import PollerDeps, run_poll_pass
from tests.integration.test_billing_safety import (  # noqa: F401
    bundled_poller,
    loop,
    originals_billed,
    rerun,
    usage_csv,
)
from tests.integration.test_e2e import Loop, _put

NOT_FOUND = "meter_event_customer_not_found"


def _meter_id(loop: Loop) -> str:
    return next(m["id"] for m in loop.sandbox.meters() if m["event_name"] == "api_requests")


def _sent(loop: Loop, deps: PollerDeps, count: int) -> list[str]:
    """The day's file of `count` rows of customer `acme-42` (Stripe knows no such customer:
    it refuses them; the rules map it to cus_acme), sent by the poller. Their identifiers."""
    now = int(time.time())
    rows = [[f"m{i}", now - 60, "api_requests", "acme-42", "5"] for i in range(count)]
    _put(loop, "day.csv", usage_csv(rows))
    run_poll_pass(deps)
    return [str(row[0]) for row in rows]


def _deliver(loop: Loop, event: dict[str, Any]) -> None:
    """The report, as Stripe would send it (the sandbox's own reports are never sent here)."""
    stored = loop.sandbox.add_event(event)
    assert loop.sandbox.deliver(stored["id"], f"{loop.service_url}/webhooks")["status"] == 200
    loop.drain()


def _report(loop: Loop, code: str, identifiers: list[str]) -> dict[str, Any]:
    errors = [(code, "No such customer: 'acme-42'", i) for i in identifiers]
    return build_error_report_event(_meter_id(loop), errors)


def _reports(loop: Loop) -> list[tuple[str, int]]:
    with loop.session() as session:
        return [(r.status, r.error_count) for r in session.exec(select(ErrorReport))]


@pytest.mark.parametrize(
    "code", [NOT_FOUND.upper(), f" {NOT_FOUND} ", "Meter_Event_Customer_Not_Found"]
)
def test_a_reports_code_is_read_in_any_case_and_the_rows_past_its_samples_found(
    loop: Loop, code: str
) -> None:
    """A failed-records file's codes are trimmed and read in lower case; a report's were kept
    as sent: `METER_EVENT_CUSTOMER_NOT_FOUND` was an unknown code, its sampled rows were
    quarantined `unclassified` (the report said `remediated`) and the two rows Stripe counted
    past its three samples were never found (the alert said they were in no object meterfix
    saw: they were in day.csv). Each row is mapped and billed once, as with the code as
    Stripe documents it."""
    with bundled_poller(loop) as deps:
        identifiers = _sent(loop, deps, 5)
        event = _report(loop, code, identifiers)
        for kind in event["data"]["reason"]["error_types"]:
            kind["sample_errors"] = kind["sample_errors"][:3]  # 5 counted, 3 sampled
        _deliver(loop, event)
        run_poll_pass(deps)  # the corrected file
    assert sorted(loop.accepted()) == sorted(f"{i}-mfx1" for i in identifiers)
    assert max(originals_billed(loop).values()) == 1
    with loop.session() as session:
        assert session.exec(select(QuarantinedRow)).all() == []
    assert _reports(loop) == [("remediated", 5)]


def test_a_reports_total_beside_smaller_counts_per_code_leaves_it_partial(loop: Loop) -> None:
    """Stripe counted 5 errors, its one type 1 (or none), one row found: the total was
    ignored beside the per-code counts, the report `remediated` with no alert, the other
    four rows Stripe counted mentioned nowhere. It is `partial`, with its alert."""
    with bundled_poller(loop) as deps:
        identifiers = _sent(loop, deps, 1)
        event = _report(loop, NOT_FOUND, identifiers)
        event["data"]["reason"]["error_count"] = 5
        _deliver(loop, event)
        run_poll_pass(deps)
    assert loop.accepted() == ["m0-mfx1"]
    assert _reports(loop) == [("partial", 5)]
    with loop.session() as session:
        subjects = [a.subject for a in session.exec(select(Alert))]
    assert any("found 1 of 5" in subject for subject in subjects), subjects


@pytest.mark.parametrize("odd", [-1, 1.5, None, True])
def test_a_report_whose_counts_are_no_counts_counts_its_samples(loop: Loop, odd: object) -> None:
    """A total and a per-code count of -1, 1.5, null or true: the report was recorded as
    "0 errors" beside the row it samples. It counts its samples."""
    with bundled_poller(loop) as deps:
        identifiers = _sent(loop, deps, 1)
        event = _report(loop, NOT_FOUND, identifiers)
        event["data"]["reason"]["error_count"] = odd
        event["data"]["reason"]["error_types"][0]["error_count"] = odd
        _deliver(loop, event)
        run_poll_pass(deps)
    assert loop.accepted() == ["m0-mfx1"]
    assert _reports(loop) == [("remediated", 1)]


def test_an_unmatched_report_is_never_linked_to_a_row_sent_after_it(loop: Loop) -> None:
    """A report about `u1`, a row none of ours held (usage sent another way, refused), is
    `unmatched`. A day's file sent later holds a valid row `u1`: the poller sends it, Stripe
    bills it, and the pass linked the old report to it (late matching is for rows Stripe's
    connector took before the poller listed them): the billed row was quarantined for the
    report's code, and "re-run with current rules" sent `u1-mfx1`, billing it twice. Stripe
    cannot have refused, by the report's end, a row the poller sent after it."""
    now = int(time.time())
    _deliver(loop, build_error_report_event(_meter_id(loop), [(NOT_FOUND, "refused", "u1")]))
    assert _reports(loop) == [("unmatched", 1)]
    time.sleep(1.1)  # the report's window ended before the file was sent
    with bundled_poller(loop) as deps:
        _put(loop, "later.csv", usage_csv([["u1", now - 60, "api_requests", "cus_alice", "5"]]))
        run_poll_pass(deps)  # sent and billed; the pass takes up late reports
        loop.drain()
        run_poll_pass(deps)
    assert loop.accepted() == ["u1"]
    with loop.session() as session:
        assert session.exec(select(QuarantinedRow)).all() == []
    assert _reports(loop) == [("unmatched", 1)]
    rerun(loop)  # nothing held: nothing sent again
    assert loop.accepted() == ["u1"]


def test_a_report_whose_window_ended_before_the_row_was_sent_is_not_about_it(loop: Loop) -> None:
    """The poller sends `m0` now; a report arrives whose window ended an hour before and
    names `m0` (usage of that identifier sent another way then, refused). It was linked to
    the row the poller sent, billed: that row was quarantined for the report's code. Stripe
    cannot have refused, in a window that ended before, a row sent after it."""
    with bundled_poller(loop) as deps:
        identifiers = _sent(loop, deps, 1)
        errors = [(NOT_FOUND, "No such customer: 'acme-42'", identifiers[0])]
        event = build_error_report_event(_meter_id(loop), errors, created=time.time() - 3600)
        _deliver(loop, event)
        run_poll_pass(deps)
    assert loop.accepted() == []  # acme-42: Stripe refused it; the report was not about it
    with loop.session() as session:
        assert session.exec(select(QuarantinedRow)).all() == []
    assert _reports(loop) == [("unmatched", 1)]
