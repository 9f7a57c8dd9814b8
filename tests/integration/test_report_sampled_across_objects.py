"""An error report sampling an identifier that rows of two objects hold. Stripe dedupes by
identifier: of the rows under `k1` it took at most one event. The report's run counted the
rows under a sampled identifier per object (`ReportScope.shared`): day.csv's `k1`, the only
one there, got the sample's code although Stripe billed it, and went out again as `k1-mfx1`
beside day2.csv's corrected `k1`: the same usage billed twice. The rows are counted over
every object the report's task reads, with the rules of one object's: a row Stripe took is
passed over and a refused row under its identifier quarantined (`identifier_taken`); of rows
all refused the first goes out; rows none proven refused are left (the report `partial`).
Real sandbox (its S3 connector, error reports), a moto bucket, the poller indexing
(MFX_POLLER=index), the worker, both databases."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import text, update
from sqlmodel import select

from service.config import PollerMode, Settings
from service.models import ErrorReport, QuarantinedRow
from service.poller.passes import build_poller_deps, run_poll_pass
from service.runtime import Runtime
from service.worker.inbox import requeue
from tests.integration.test_e2e import BUCKET, Loop, render, running_loop

FUTURE = "timestamp_in_future"
TAKEN = "identifier_taken"


@pytest.fixture
def loop(
    db_url: str,
    s3_endpoint: str,
    tmp_path: Path,
    make_app: Callable[[Settings], Flask],
) -> Iterator[Loop]:
    with running_loop(
        db_url, s3_endpoint, tmp_path, make_app, poller=PollerMode.INDEX, data_errors="report"
    ) as running:
        yield running


def _row(identifier: str, timestamp: int, customer: str, value: int) -> dict[str, object]:
    return {
        "identifier": identifier,
        "timestamp": timestamp,
        "event_name": "api_requests",
        "customer": customer,
        "value": str(value),
    }


def _sent(loop: Loop, objects: list[tuple[str, list[dict[str, object]]]]) -> None:
    """Each object uploaded, indexed and imported by Stripe's connector in turn, Stripe's
    report about them flushed and taken by the worker, the corrected files imported, any
    report about them too."""
    runtime = Runtime(loop.settings)
    try:
        deps = build_poller_deps(runtime)
        for key, rows in objects:
            loop.s3.put_object(Bucket=BUCKET, Key=key, Body=render(rows, "csv"))
            run_poll_pass(deps)
            loop.sandbox.connector_poll()
        loop.sandbox_app.extensions["sandbox"].flush_reports()
        loop.drain()
        run_poll_pass(deps)  # indexes the corrected files
        loop.sandbox.connector_poll()  # Stripe imports them
        loop.sandbox_app.extensions["sandbox"].flush_reports()
        loop.drain()
    finally:
        runtime.close()


def _held(loop: Loop) -> list[tuple[str | None, str, int, object, str]]:
    """The quarantined rows: identifier, object, row, ours, reason."""
    with loop.session() as session:
        rows = session.exec(select(QuarantinedRow)).all()
    return sorted(
        (r.identifier, r.source, r.row_number, r.record["mfx_code"], r.reason) for r in rows
    )


def _reports(loop: Loop) -> list[tuple[int | None, str]]:
    with loop.session() as session:
        reports = session.exec(select(ErrorReport).order_by(ErrorReport.id)).all()
    return [(r.error_count, r.status) for r in reports]


def test_a_sampled_identifier_billed_from_another_object_is_not_sent_again(loop: Loop) -> None:
    """day2.csv's k1 in milliseconds (refused, sampled) sent, then day.csv's valid k1 (billed:
    Stripe had kept no event under k1). day.csv's k1 went out again as k1-mfx1, billed twice.
    It is passed over; day2.csv's refused k1 is quarantined under identifier_taken."""
    now = int(time.time()) - 60
    _sent(
        loop,
        [
            (
                "usage/day2.csv",
                [_row("s1", now * 1000, "cus_bob", 3), _row("k1", now * 1000, "cus_bob", 7)],
            ),
            ("usage/day.csv", [_row("a1", now, "cus_bob", 1), _row("k1", now, "cus_bob", 5)]),
        ],
    )

    accepted = loop.accepted()
    assert sorted(accepted) == ["a1", "k1", "s1-mfx1"]  # k1 billed once, from day.csv
    assert [e["identifier"] for e in loop.sandbox.duplicates()] == []
    assert _held(loop) == [
        (
            "k1",
            "usage/day2.csv",
            2,
            TAKEN,
            "identifier 'k1' is also a row of 'usage/day.csv' that Stripe took (not refused): "
            "Stripe took one event under it, a second would be billed twice; not corrected",
        )
    ]
    assert _reports(loop) == [(2, "remediated")]


def test_of_rows_all_refused_in_two_objects_under_a_sampled_identifier_the_first_goes_out(
    loop: Loop,
) -> None:
    """k1 in milliseconds in day.csv and day2.csv: Stripe refused both, billed nothing under
    k1. Both corrected went out as k1-mfx1 (the second refused as a duplicate, or billed twice
    past Stripe's dedupe window). day.csv's (the first object the task reads) goes out;
    day2.csv's is quarantined under identifier_taken, naming it."""
    now = int(time.time()) - 60
    _sent(
        loop,
        [
            ("usage/day.csv", [_row("k1", now * 1000, "cus_bob", 5)]),
            ("usage/day2.csv", [_row("k1", now * 1000, "cus_bob", 7)]),
        ],
    )

    assert loop.accepted() == ["k1-mfx1"]
    [event] = loop.sandbox.meter_events()
    assert event["payload"]["value"] == "5"  # day.csv's
    assert [e["identifier"] for e in loop.sandbox.duplicates()] == []
    assert _held(loop) == [
        (
            "k1",
            "usage/day2.csv",
            1,
            TAKEN,
            "identifier 'k1' is also row 1's of 'usage/day.csv', which Stripe refused too and "
            "the report's run over it takes: Stripe keeps one event an identifier (it would "
            "have kept the first row's), so a second would be refused as a duplicate or billed "
            "twice; not corrected",
        )
    ]


def test_rows_of_two_objects_under_a_sampled_identifier_none_proven_refused_are_left(
    loop: Loop,
) -> None:
    """Stripe could not find the customer of k1: day2.csv's k1 names acme-42 (refused; the
    rules map it to cus_acme), day.csv's cus_bob (billed). Which one Stripe refused our
    checks cannot tell: day.csv's k1 went out again as k1-mfx1 (billed twice), and cus_bob
    was taken for a customer Stripe did not find. Nothing goes out: the report is `partial`."""
    now = int(time.time()) - 60
    _sent(
        loop,
        [
            ("usage/day2.csv", [_row("k1", now, "acme-42", 7)]),
            ("usage/day.csv", [_row("k1", now, "cus_bob", 5), _row("b2", now, "cus_bob", 2)]),
        ],
    )

    assert sorted(loop.accepted()) == ["b2", "k1"]
    assert _held(loop) == []
    assert _reports(loop) == [(1, "partial")]


def test_a_sampled_identifier_another_run_corrected_in_another_object_is_not_sent_again(
    loop: Loop,
) -> None:
    """day2.csv's k1 in milliseconds (refused): its report's run corrected it, k1-mfx1 billed.
    Then day.csv's k1 in milliseconds (refused, sampled by a second report linking both
    objects). day2.csv's k1, handled by the earlier run, was passed over, so day.csv's became
    the first and went out as k1-mfx1 too (refused as a duplicate, or billed twice past
    Stripe's dedupe). It is held under identifier_taken, naming day2.csv's row, which comes
    later in the order the task runs over the objects."""
    now = int(time.time()) - 60
    _sent(loop, [("usage/day2.csv", [_row("k1", now * 1000, "cus_bob", 7)])])
    _sent(
        loop,
        [
            (
                "usage/day.csv",
                [_row("s1", now * 1000, "cus_bob", 3), _row("k1", now * 1000, "cus_bob", 5)],
            )
        ],
    )

    assert sorted(loop.accepted()) == ["k1-mfx1", "s1-mfx1"]
    [k1] = [e for e in loop.sandbox.meter_events() if e["identifier"] == "k1-mfx1"]
    assert k1["payload"]["value"] == "7"  # day2.csv's, corrected by the earlier run
    assert [e["identifier"] for e in loop.sandbox.duplicates()] == []
    assert _held(loop) == [
        (
            "k1",
            "usage/day.csv",
            2,
            TAKEN,
            "identifier 'k1' is also row 1's of 'usage/day2.csv', which another run corrected "
            "or quarantined (sent, or to be sent by a re-run, under a derived identifier): a "
            "second would be refused as a duplicate or billed twice; not corrected",
        )
    ]
    assert _reports(loop) == [(1, "remediated"), (2, "remediated")]


def test_a_row_another_run_quarantined_is_not_said_to_be_taken_by_stripe(loop: Loop) -> None:
    """day.csv's k1 with a value that is text (refused): the run over its failed records
    quarantined it. Then day2.csv's k1 in milliseconds, other usage (another second: not the
    quarantined row sent again), refused and sampled by a report linking both objects. The
    report's codes do not fit day.csv's k1, so it was taken for a row Stripe took, and
    day2.csv's k1 was held as "a row of 'usage/day.csv' that Stripe took (not refused)":
    false, an operator may take k1 for billed. It is held naming the quarantined row (sent
    as k1-mfx1, it would clash with that row re-run once fixed)."""
    now = int(time.time()) - 60
    bad = _row("k1", now, "cus_bob", 0) | {"value": "lots"}
    _sent(loop, [("usage/day.csv", [bad])])
    _sent(loop, [("usage/day2.csv", [_row("k1", (now - 5) * 1000, "cus_bob", 7)])])

    assert loop.accepted() == []
    assert [e["identifier"] for e in loop.sandbox.duplicates()] == []
    held = _held(loop)
    # quarantined from the failed-records file of day.csv's import
    assert [(h[0], h[2], h[3]) for h in held[:1]] == [("k1", 1, "meter_event_invalid_value")]
    assert held[1:] == [
        (
            "k1",
            "usage/day2.csv",
            1,
            TAKEN,
            "identifier 'k1' is also row 1's of 'usage/day.csv', which another run corrected "
            "or quarantined (sent, or to be sent by a re-run, under a derived identifier): a "
            "second would be refused as a duplicate or billed twice; not corrected",
        )
    ]


def test_a_quarantined_row_sent_again_is_not_said_to_be_taken_by_stripe(loop: Loop) -> None:
    """day.csv's k1 with a value that is text (refused): the run over its failed records
    quarantined it. Then day2.csv's k1, the same usage (the same second) with its value fixed
    but in milliseconds, refused and sampled by a report linking both objects. The poller,
    indexing day2.csv, marked the quarantined row taken again (no longer handled); the
    report's codes do not fit it, so it was taken for a row Stripe took, and day2.csv's k1
    was held as "a row of 'usage/day.csv' that Stripe took (not refused)": false, and the
    usage was never billed. A row our checks prove Stripe refuses is not one it took:
    day2.csv's k1 goes out, once."""
    now = int(time.time()) - 60
    bad = _row("k1", now, "cus_bob", 0) | {"value": "lots"}
    _sent(loop, [("usage/day.csv", [bad])])
    _sent(loop, [("usage/day2.csv", [_row("k1", now * 1000, "cus_bob", 7)])])

    assert loop.accepted() == ["k1-mfx1"]
    [event] = loop.sandbox.meter_events()
    assert event["payload"]["value"] == "7"  # day2.csv's, the usage sent again
    assert [e["identifier"] for e in loop.sandbox.duplicates()] == []
    with loop.session() as session:
        [held] = session.exec(select(QuarantinedRow)).all()
    # quarantined from the failed-records file of day.csv's import, taken again by day2.csv
    assert (held.identifier, held.row_number, held.record["mfx_code"]) == (
        "k1",
        1,
        "meter_event_invalid_value",
    )
    assert (held.taken_again or "").startswith("usage/day2.csv (ETag ")
    assert _reports(loop) == [(1, "remediated")]


def _due(loop: Loop, at: datetime) -> None:
    """The pending tasks due at `at` (a day ahead: a worker's backlog holds them)."""
    with loop.engine.begin() as connection:
        connection.execute(
            text("UPDATE inbox_events SET next_attempt_at = :at WHERE status = 'pending'"),
            {"at": at},
        )


def _after_second(second: int) -> None:
    """Wait for the whole second after `second` (an upload then is stamped later than an
    event of that second)."""
    time.sleep(max(0.0, second + 1 - time.time()))


@pytest.mark.parametrize("second", ["any", "later"])
def test_a_refused_row_its_own_run_is_yet_to_take_is_not_said_to_be_taken_by_stripe(
    loop: Loop, second: str
) -> None:
    """day.csv's k1 with a value that is text (refused), its failed records not yet taken by
    the worker (a backlog). Then day2.csv's k1 in milliseconds, other usage, refused and
    sampled by a report linking both objects. day.csv's k1, a row our checks prove Stripe
    refuses, is not one it took, nor is it the report's: its own run quarantines it, and
    once fixed a re-run sends it as k1-mfx1. day2.csv's k1 is held naming it (sent as
    k1-mfx1 too, the two would clash), not as a row Stripe took.
    day2.csv uploaded in a later second than day.csv's import-set event (`later`), day.csv's
    run left k1 to Stripe's connector (`TakenAgain`, by identifier alone), though the
    connector refused day2.csv's k1 too: neither billed nor held."""
    now = int(time.time()) - 60
    bad = _row("k1", now, "cus_bob", 0) | {"value": "lots"}
    runtime = Runtime(loop.settings)
    try:
        deps = build_poller_deps(runtime)
        loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render([bad], "csv"))
        run_poll_pass(deps)
        [event] = loop.sandbox.connector_poll()
        _due(loop, datetime.now(UTC) + timedelta(days=1))  # day.csv's failed records wait
        if second == "later":  # day2.csv stamped after day.csv's import-set event
            _after_second(int(event["created"]))
        later = [_row("k1", (now - 5) * 1000, "cus_bob", 7)]
        loop.s3.put_object(Bucket=BUCKET, Key="usage/day2.csv", Body=render(later, "csv"))
        if second == "later":
            uploaded = loop.s3.head_object(Bucket=BUCKET, Key="usage/day2.csv")["LastModified"]
            assert uploaded.timestamp() > int(event["created"])
        run_poll_pass(deps)
        loop.sandbox.connector_poll()
        loop.sandbox_app.extensions["sandbox"].flush_reports()
        loop.drain()  # the report's task
        _due(loop, datetime.now(UTC) - timedelta(seconds=1))
        loop.drain()  # day.csv's failed records
    finally:
        runtime.close()

    assert loop.accepted() == []
    held = _held(loop)
    assert [(h[0], h[2], h[3]) for h in held[:1]] == [("k1", 1, "meter_event_invalid_value")]
    assert held[1:] == [
        (
            "k1",
            "usage/day2.csv",
            1,
            TAKEN,
            "identifier 'k1' is also row 1's of 'usage/day.csv', which Stripe refused too, for "
            "a problem this report does not count (its own run corrects or quarantines it, to "
            "be sent under a derived identifier): a second would be refused as a duplicate or "
            "billed twice; not corrected",
        )
    ]


def test_a_refused_row_whose_later_row_is_reported_after_its_run_is_not_left_out(
    loop: Loop,
) -> None:
    """day.csv's k1 with a value that is text (refused). Then day2.csv's k1 in milliseconds,
    other usage, uploaded a second after day.csv's import-set event and taken by Stripe's
    connector, its report still to come when day.csv's failed records are run. day2.csv's k1
    is one our checks prove Stripe refuses, so Stripe took nothing under k1 from it: day.csv's
    k1 was left to the connector all the same, and the report's run, finding it refused and
    in no quarantine, held day2.csv's k1 for it (its own run to take it): neither billed nor
    held. It is quarantined by its own run, and day2.csv's k1 held naming it."""
    now = int(time.time()) - 60
    bad = _row("k1", now, "cus_bob", 0) | {"value": "lots"}
    runtime = Runtime(loop.settings)
    try:
        deps = build_poller_deps(runtime)
        loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render([bad], "csv"))
        run_poll_pass(deps)
        [event] = loop.sandbox.connector_poll()
        _after_second(int(event["created"]))
        later = [_row("k1", (now - 5) * 1000, "cus_bob", 7)]
        loop.s3.put_object(Bucket=BUCKET, Key="usage/day2.csv", Body=render(later, "csv"))
        run_poll_pass(deps)
        loop.sandbox.connector_poll()
        loop.drain()  # day.csv's failed records, before day2.csv's report
        loop.sandbox_app.extensions["sandbox"].flush_reports()
        loop.drain()  # the report's task
    finally:
        runtime.close()

    assert loop.accepted() == []
    held = _held(loop)
    # quarantined from the failed-records file of day.csv's import
    assert [(h[0], h[2], h[3]) for h in held[:1]] == [("k1", 1, "meter_event_invalid_value")]
    assert held[1:] == [
        (
            "k1",
            "usage/day2.csv",
            1,
            TAKEN,
            "identifier 'k1' is also row 1's of 'usage/day.csv', which another run corrected "
            "or quarantined (sent, or to be sent by a re-run, under a derived identifier): a "
            "second would be refused as a duplicate or billed twice; not corrected",
        )
    ]


@pytest.mark.parametrize("gone", ["deleted", "rewritten"])
def test_a_sampled_identifier_another_run_corrected_in_an_object_gone_is_not_sent_again(
    loop: Loop, gone: str
) -> None:
    """day2.csv's k1 in milliseconds (refused): its report's run corrected it, k1-mfx1 billed.
    day2.csv is then deleted, or rewritten in place without k1, before day.csv's k1 in
    milliseconds is refused and sampled by a second report. Only objects the task reads were
    asked which rows another run handled, and k1 was no longer shared: day.csv's k1 went out
    as k1-mfx1 again (refused as a duplicate, or billed twice past Stripe's dedupe). It is
    held under identifier_taken, naming day2.csv's corrected row."""
    now = int(time.time()) - 60
    _sent(loop, [("usage/day2.csv", [_row("k1", now * 1000, "cus_bob", 7)])])
    assert loop.accepted() == ["k1-mfx1"]
    if gone == "deleted":
        loop.s3.delete_object(Bucket=BUCKET, Key="usage/day2.csv")
    else:
        body = render([_row("z9", now, "cus_bob", 1)], "csv")
        loop.s3.put_object(Bucket=BUCKET, Key="usage/day2.csv", Body=body)
    _sent(
        loop,
        [
            (
                "usage/day.csv",
                [_row("s1", now * 1000, "cus_bob", 3), _row("k1", now * 1000, "cus_bob", 5)],
            )
        ],
    )

    assert sorted(loop.accepted()).count("k1-mfx1") == 1
    [k1] = [e for e in loop.sandbox.meter_events() if e["identifier"] == "k1-mfx1"]
    assert k1["payload"]["value"] == "7"  # day2.csv's, corrected by the earlier run
    assert [e["identifier"] for e in loop.sandbox.duplicates()] == []
    assert _held(loop) == [
        (
            "k1",
            "usage/day.csv",
            2,
            TAKEN,
            "identifier 'k1' is also row 1's of 'usage/day2.csv', which another run corrected "
            "or quarantined (sent, or to be sent by a re-run, under a derived identifier): a "
            "second would be refused as a duplicate or billed twice; not corrected",
        )
    ]


def test_a_retried_report_reading_an_object_recorded_since_does_not_send_its_row_again(
    loop: Loop,
) -> None:
    """k1 in milliseconds in day2.csv and day.csv, both refused by Stripe's connector; the
    poller had listed day2.csv only. The report's run over it corrected k1, k1-mfx1 billed.
    The poller then records day.csv, and the report's task is delivered again: it reads both,
    the run over day2.csv done. That run, the report's own, was passed over as another
    object's, so day.csv's k1 (sorting first) went out as k1-mfx1 again. It is held under
    identifier_taken, naming day2.csv's row the report's run took."""
    now = int(time.time()) - 60
    runtime = Runtime(loop.settings)
    try:
        deps = build_poller_deps(runtime)
        body = render([_row("k1", now * 1000, "cus_bob", 7)], "csv")
        loop.s3.put_object(Bucket=BUCKET, Key="usage/day2.csv", Body=body)
        run_poll_pass(deps)
        body = render([_row("k1", now * 1000, "cus_bob", 5)], "csv")
        loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=body)
        loop.sandbox.connector_poll()  # takes both; the poller has not listed day.csv yet
        loop.sandbox_app.extensions["sandbox"].flush_reports()
        loop.drain()
        loop.sandbox.connector_poll()  # imports the corrected day2.csv
        assert loop.accepted() == ["k1-mfx1"]
        run_poll_pass(deps)  # records day.csv
    finally:
        runtime.close()
    with loop.session() as session:
        [event_id] = session.exec(select(ErrorReport.event_id)).all()
        session.exec(update(ErrorReport).values(status="recorded"))  # type: ignore[call-overload]
        session.commit()
    assert requeue(loop.engine, f"mfx_task_error_report_{event_id}")
    loop.drain()
    loop.sandbox.connector_poll()  # imports any corrected file the task wrote again

    assert loop.accepted() == ["k1-mfx1"]
    [k1] = loop.sandbox.meter_events()
    assert k1["payload"]["value"] == "7"  # day2.csv's
    assert [e["identifier"] for e in loop.sandbox.duplicates()] == []
    assert _held(loop) == [
        (
            "k1",
            "usage/day.csv",
            1,
            TAKEN,
            "identifier 'k1' is also row 1's of 'usage/day2.csv', which Stripe refused too and "
            "the report's run over it takes: Stripe keeps one event an identifier (it would "
            "have kept the first row's), so a second would be refused as a duplicate or billed "
            "twice; not corrected",
        )
    ]
