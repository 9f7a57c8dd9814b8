"""The hourly retention purge against what still needs its rows: a quarantine re-run queued
while a batch is being deleted, a dead-lettered re-run waiting for `meterfix replay`, and the
error reports, purged once nothing needs them (never one a redelivered event still finds)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlmodel import Session, col, select

import service.notify.retention
from sandbox.events import build_error_report_event
from service.config import Settings
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.jobs.store.report_records import UNMATCHED_ALERT
from service.models import (
    ErrorReport,
    ErrorSample,
    ErrorTypeCount,
    InboxEvent,
    QuarantinedRow,
    RemediationRun,
)
from service.models._types import as_utc, utcnow
from service.notify.alerts import resolve_alert
from service.notify.retention import REPORT_TASK_PREFIX, purge_expired
from service.poller.passes import run_poll_pass
from service.web.actions import Actor, queue_rerun
from service.worker.inbox import replay
from service.worker.loop import InboxWorker
from service.worker.tasks import TaskKind, task_id
from tests.integration.test_billing_safety import (
    a_row_the_poller_refused,
    add_rules,
    bundled_poller,
    originals_billed,
    reported,
    rerun,
    usage_csv,
)
from tests.integration.test_e2e import Loop, _put, running_loop
from tests.integration.test_retention_reruns import _purge_between
from tests.integration.test_worker import ERRORS, Intake, intake

__all__ = ["intake"]  # the fixture, shared with the worker's tests

LATER = timedelta(seconds=1.0)  # how long a re-run queued during a batch is let run first


@pytest.fixture
def loop(
    db_url: str, s3_endpoint: str, tmp_path: Path, make_app: Callable[[Settings], Flask]
) -> Iterator[Loop]:
    with running_loop(db_url, s3_endpoint, tmp_path, make_app) as running:
        yield running


def _queue_rerun_during_the_quarantine_batch(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """While the pass is between its check for a waiting re-run (`any_unfinished`, asked
    before each batch: the audit's, then the quarantined rows') and its delete of the
    quarantined rows, an operator queues a re-run on a connection of their own (the
    dashboard). What `queue_rerun` answered them."""
    asked = service.notify.retention.any_unfinished
    answered: dict[str, Any] = {}
    checks: list[int] = []

    def operator() -> None:
        answered.update(queue_rerun(loop.engine, QuarantineFilter(), Actor("api", "127.0.0.1")))

    queueing = threading.Thread(target=operator)

    def checked_then_queued(*args: Any) -> bool:
        waiting = asked(*args)
        checks.append(1)
        if len(checks) == 2:  # the quarantined rows' batch
            queueing.start()
            queueing.join(LATER.total_seconds())
        return waiting

    monkeypatch.setattr(service.notify.retention, "any_unfinished", checked_then_queued)
    with loop.session() as session:
        [first] = session.exec(select(RemediationRun)).all()
    _purge_between(loop, first)
    queueing.join(30)
    assert not queueing.is_alive()
    return answered


def test_a_rerun_queued_while_a_batch_is_deleted_takes_every_row_it_counted(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poller refused `x` (no meter by that name); run R1 quarantined it. At the end of
    MFX_RETENTION_DAYS the hourly pass checked for a waiting re-run (none), and in that very
    moment the operator, who had mapped the name, queued "Re-run with current rules": 1 row
    counted, a task queued. The pass then deleted R1's quarantined rows it had checked for:
    the re-run found nothing, `x` was never billed, the operator told it was re-run.
    Whichever goes first, what the operator is told is what the re-run takes."""
    with bundled_poller(loop) as deps:
        a_row_the_poller_refused(loop, deps)
        time.sleep(1.5)  # the re-run comes later than the first run
        add_rules(loop, '[event_names]\n"legacy_calls" = "api_requests"\n')
        queued = _queue_rerun_during_the_quarantine_batch(loop, monkeypatch)
        loop.drain()
        run_poll_pass(deps)  # the re-run's corrected file, if any
    with loop.session() as session:
        reruns = session.exec(
            select(RemediationRun).where(RemediationRun.trigger == "quarantine_rerun")
        ).all()
        held = session.exec(select(QuarantinedRow)).all()
    # the batch went first (the operator's count waited for it): nothing left to re-run
    assert (queued["queued"], queued["rows"]) == (False, 0), queued
    assert [r.input_rows for r in reruns] == [] and held == []
    assert sorted(loop.accepted()) == ["a"]


def test_a_dead_lettered_rerun_still_takes_its_rows_when_replayed_after_the_purge(
    loop: Loop,
) -> None:
    """The operator queued a re-run of `x` (1 row counted); it failed through every attempt
    (dead-lettered, a critical alert). The hourly pass then deleted R1's quarantined rows:
    README, retention "neither is purged while a quarantine re-run is queued or running",
    and a dead one is not finished either: `meterfix replay` re-queues it. Replayed once
    the cause was fixed, it found nothing: `x` never billed."""
    with bundled_poller(loop) as deps:
        a_row_the_poller_refused(loop, deps)
        with loop.session() as session:
            [first] = session.exec(select(RemediationRun)).all()
        time.sleep(1.5)
        add_rules(loop, '[event_names]\n"legacy_calls" = "api_requests"\n')
        queued = queue_rerun(loop.engine, QuarantineFilter(), Actor("api", "127.0.0.1"))
        assert queued["rows"] == 1

        def bucket_down(_kind: TaskKind, _ref: str) -> str:
            raise ConnectionError("S3 unreachable")

        once = loop.settings.model_copy(update={"mfx_max_attempts": 1})
        report = InboxWorker(loop.engine, once, task_runner=bucket_down).drain()
        assert [event for event, _ in report.dead] == [queued["task"]]
        _purge_between(loop, first)
        with loop.session() as session:
            held = session.exec(select(QuarantinedRow)).all()
        assert [(q.identifier, q.run_id) for q in held] == [("x", first.id)]
        lease = timedelta(seconds=loop.settings.mfx_worker_lease)
        assert replay(loop.engine, queued["task"], lease).found
        loop.drain()
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "x-mfx1"]
    assert max(originals_billed(loop).values()) == 1


def _report_tables(loop: Loop | Intake) -> tuple[list[str], int, int]:
    """(the error reports' event ids, their samples, their counts per code)."""
    with Session(loop.engine) as session:
        reports = [r.event_id for r in session.exec(select(ErrorReport)).all()]
        samples = len(session.exec(select(ErrorSample)).all())
        counts = len(session.exec(select(ErrorTypeCount)).all())
    return reports, samples, counts


def _report_run(loop: Loop) -> RemediationRun:
    with loop.session() as session:
        runs = session.exec(select(RemediationRun).order_by(col(RemediationRun.id))).all()
    [run] = [r for r in runs if r.run_key.startswith("error_report:")]
    return run


def test_an_error_report_is_purged_once_nothing_needs_it(loop: Loop) -> None:
    """docs/architecture.md: "a report every validation window is kept for the retention
    period"; none was ever purged (a row, its samples and counts, every window, forever).
    Kept while its task is dead-lettered (`meterfix replay` runs it from the report) and
    while rows its run quarantined are (their refusal's time is the report's window)."""
    now = int(time.time())
    row = ["g", now - 60, "api_requests", "cus_ghost", "5"]
    _put(loop, "day.csv", usage_csv([["a", now - 60, "api_requests", "cus_alice", "3"], row]))
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)  # both sent; Stripe refuses g (no such customer)
        [event] = loop.sandbox_app.extensions["sandbox"].flush_reports()

        def stripe_down(_kind: TaskKind, _ref: str) -> str:
            raise ConnectionError("Stripe unreachable")

        once = loop.settings.model_copy(update={"mfx_max_attempts": 1})
        # the event recorded the report; its task failed through every attempt
        dead = InboxWorker(loop.engine, once, task_runner=stripe_down).drain().dead
        task = task_id(TaskKind.ERROR_REPORT, str(event["id"]))
        assert [event_id for event_id, _ in dead] == [task]
        days = loop.settings.mfx_retention_days
        purge_expired(loop.engine, days, now=utcnow() + timedelta(days=days + 1))
        assert _report_tables(loop) == ([event["id"]], 1, 1)  # its task is dead: kept
        assert replay(loop.engine, task, timedelta(seconds=30)).found
        loop.drain()  # g quarantined by the report's run
    run = _report_run(loop)
    finished = as_utc(run.finished_at)
    assert finished is not None
    purge_expired(loop.engine, 7, now=finished + timedelta(days=8))
    assert _report_tables(loop) == ([event["id"]], 1, 1)  # its run's row is held (35 days)
    _purge_between(loop, run)
    assert _report_tables(loop) == ([], 0, 0)
    with loop.session() as session:
        assert [r.id for r in session.exec(select(RemediationRun)).all()] == [run.id]


def test_a_redelivered_error_report_is_not_remediated_again_after_a_short_retention(
    loop: Loop,
) -> None:
    """MFX_RETENTION_DAYS=7. Stripe refused `g` (a customer it did not know); the operator had
    mapped the customer, so the report's run corrected it: `g-mfx1` billed, nothing held.
    Eight days later Stripe redelivered the event (it keeps events 30 days; the inbox's
    record of it went at 7): the report is how the redelivery is known (recorded again, its
    run key would be `error_report:<event>:<object>` again, but its status, alerts and page
    started over), so it is kept for as long as Stripe takes usage (35 days): the event
    changes nothing. (A guard: this
    held before error reports were purged at all.)"""
    now = int(time.time())
    row = ["g", now - 60, "api_requests", "cus_ghost", "5"]
    _put(loop, "day.csv", usage_csv([["a", now - 60, "api_requests", "cus_alice", "3"], row]))
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)
        add_rules(loop, '"cus_ghost" = "cus_alice"\n')  # under RULES' [customers]
        [event] = loop.sandbox_app.extensions["sandbox"].flush_reports()
        loop.drain()  # g corrected: g-mfx1
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "g-mfx1"]
    run = _report_run(loop)
    finished = as_utc(run.finished_at)
    assert finished is not None
    before = _report_tables(loop)
    with loop.session() as session:
        [reported] = session.exec(select(ErrorReport)).all()
    purge_expired(loop.engine, 7, now=finished + timedelta(days=8))
    with loop.session() as session:
        assert session.exec(select(InboxEvent)).all() == []  # the inbox forgot the event
    assert _report_tables(loop) == before
    status = loop.sandbox.deliver(str(event["id"]), f"{loop.service_url}/webhooks")["status"]
    assert status == 200
    loop.drain()
    with loop.session() as session:
        runs = [r.id for r in session.exec(select(RemediationRun)).all()]
        [report] = session.exec(select(ErrorReport)).all()
    assert runs == [run.id] and (report.id, report.status) == (reported.id, reported.status)
    assert _report_tables(loop) == before
    assert sorted(loop.accepted()) == ["a", "g-mfx1"]
    purge_expired(loop.engine, 7, now=finished + timedelta(days=36))
    assert _report_tables(loop) == ([], 0, 0)


def test_an_unmatched_report_stays_while_its_warning_is_open(intake: Intake) -> None:
    """A report none of whose rows is ours (`unmatched`) raised its meter's warning; it is
    how the warning stays up (`any_unmatched_like`) until the operator resolves it."""
    event_id = intake.deliver(build_error_report_event("mtr_u", ERRORS))
    intake.worker().drain()
    days = intake.settings.mfx_retention_days
    later = utcnow() + timedelta(days=days + 1)
    purge_expired(intake.engine, days, now=later)
    assert _report_tables(intake)[0] == [event_id]
    assert resolve_alert(intake.engine, f"{UNMATCHED_ALERT}:mtr_u")
    purge_expired(intake.engine, days, now=later)
    assert _report_tables(intake) == ([], 0, 0)


def test_the_report_task_retention_waits_for_is_the_workers() -> None:
    """Retention names the report's task itself (notify imports no worker module)."""
    assert task_id(TaskKind.ERROR_REPORT, "evt_1") == REPORT_TASK_PREFIX + "evt_1"


def _purge_days_after(loop: Loop, days: int) -> None:
    """The hourly purge (the default 90 days), `days` after the last run finished."""
    with loop.session() as session:
        last = session.exec(select(RemediationRun).order_by(col(RemediationRun.id).desc())).first()
    assert last is not None and last.finished_at is not None
    purge_expired(
        loop.engine, 90, now=(as_utc(last.finished_at) or utcnow()) + timedelta(days=days)
    )


def test_a_refused_row_without_a_timestamp_fixed_by_hand_months_later_is_billed(
    loop: Loop,
) -> None:
    """Retention purges quarantined rows Stripe takes no more (older than 35 days). A row
    without a timestamp has no age: Stripe bills it when it arrives. Purged, the entry that
    said Stripe refused `g` was gone, and `g` fixed by hand in the file 91 days later was
    left out as sent before (usage lost, counted only in `left_out`)."""
    other = ["a", "", "api_requests", "cus_alice", "3"]
    _put(loop, "day.csv", usage_csv([other, ["g", "", "api_requests", "cus_ghost", "5"]]))
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)
        reported(loop)  # Stripe refuses g (no such customer): quarantined
        _purge_days_after(loop, 91)
        with loop.session() as session:
            assert [q.identifier for q in session.exec(select(QuarantinedRow))] == ["g"]
        time.sleep(1)
        _put(loop, "day.csv", usage_csv([other, ["g", "", "api_requests", "cus_alice", "5"]]))
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "g"]


def test_a_row_without_a_timestamp_a_rerun_sent_is_not_sent_again_months_later(
    loop: Loop,
) -> None:
    """The re-run that sent `x` as `x-mfx1` is found through the entry it took; purged with
    the first run's rows, `x` fixed by hand in the file 91 days later went out as well:
    billed twice."""
    other = ["a", "", "api_requests", "cus_alice", "3"]
    _put(loop, "day.csv", usage_csv([other, ["x", "", "legacy_calls", "cus_alice", "5"]]))
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)
        loop.drain()  # x refused by the poller (no such meter): quarantined
        add_rules(loop, '[event_names]\n"legacy_calls" = "api_requests"\n')
        rerun(loop)
        run_poll_pass(deps)  # x-mfx1
        _purge_days_after(loop, 91)
        time.sleep(1)
        fixed = [other, ["x", "", "api_requests", "cus_alice", "5"]]
        _put(loop, "day.csv", usage_csv([*fixed, ["b", "", "api_requests", "cus_alice", "1"]]))
        run_poll_pass(deps)
        loop.drain()
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "b", "x-mfx1"]
    assert max(originals_billed(loop).values()) == 1
