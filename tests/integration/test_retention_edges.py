"""The hourly retention purge at its edges: it never deletes what a queued or running
quarantine re-run still has to take, a dead letter still to be replayed, nor, within the 35
days Stripe takes usage, the record that Stripe refused a row the poller had sent."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlmodel import Session, col, select

from sandbox.events import build_error_report_event
from service.config import Settings
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.models import Alert, ErrorReport, QuarantinedRow, RemediationRun
from service.models._types import utcnow
from service.models.inbox import InboxStatus
from service.notify.retention import RERUN_TASK, purge_expired
from service.poller.passes import run_poll_pass
from service.web.actions import Actor, queue_rerun
from service.worker.inbox_claims import claim_next, release_claim
from service.worker.tasks import TASK_TYPE_PREFIX, TaskKind
from tests.integration.test_billing_safety import (
    a_row_stripe_refused,
    a_row_the_poller_refused,
    add_rules,
    bundled_poller,
    originals_billed,
    usage_csv,
)
from tests.integration.test_e2e import Loop, _put, running_loop
from tests.integration.test_retention_reruns import _purge_between
from tests.integration.test_worker import ERRORS, Intake, _rows, _shift_clock, intake

__all__ = ["intake"]  # the fixture, shared with the worker's tests


@pytest.fixture
def loop(
    db_url: str, s3_endpoint: str, tmp_path: Path, make_app: Callable[[Settings], Flask]
) -> Iterator[Loop]:
    with running_loop(db_url, s3_endpoint, tmp_path, make_app) as running:
        yield running


@pytest.mark.parametrize("task", ["queued", "claimed"])
def test_a_rerun_still_takes_the_rows_it_counted_after_the_purge(loop: Loop, task: str) -> None:
    """The poller refused `x` (no meter by that name); run R1 quarantined it. Near the end of
    MFX_RETENTION_DAYS the operator mapped the name and pressed "Re-run with current rules"
    (1 row counted; README: "Re-running ... queues a task that re-runs the matching rows with
    the current rules"). The hourly purge came while the task waited for the worker, or while
    a worker held it: it deleted R1's quarantined rows (R1 past retention; README: "a row a
    re-run took stays", but this one was not taken yet), so the re-run found nothing and `x`
    was never billed: usage lost, with the operator told it was re-run."""
    with bundled_poller(loop) as deps:
        a_row_the_poller_refused(loop, deps)
        with loop.session() as session:
            [first] = session.exec(select(RemediationRun)).all()
        time.sleep(1.5)  # the re-run comes later than the first run
        add_rules(loop, '[event_names]\n"legacy_calls" = "api_requests"\n')
        queued = queue_rerun(loop.engine, QuarantineFilter(), Actor("api", "127.0.0.1"))
        assert queued["rows"] == 1
        lease = timedelta(seconds=loop.settings.mfx_worker_lease)
        claimed = claim_next(loop.engine, "worker-1", lease) if task == "claimed" else None
        _purge_between(loop, first)  # the hourly pass, before the re-run took its rows
        if claimed is not None:  # the worker that held it lets it go; the next one runs it
            assert claimed.event_id == queued["task"]
            assert release_claim(loop.engine, claimed, "worker-1")
        loop.drain()
        run_poll_pass(deps)  # the re-run's corrected file
    assert sorted(loop.accepted()) == ["a", "x-mfx1"]
    assert max(originals_billed(loop).values()) == 1
    with loop.session() as session:
        runs = session.exec(select(RemediationRun).order_by(col(RemediationRun.id))).all()
        held = session.exec(select(QuarantinedRow)).all()
    assert [(r.trigger, r.input_rows) for r in runs][-1] == ("quarantine_rerun", 1)
    assert [(q.identifier, q.rerun_id) for q in held] == [("x", runs[-1].id)]


def test_the_rerun_task_type_retention_waits_for_is_the_workers() -> None:
    """Retention names the re-run's task type itself (notify imports no worker module)."""
    assert TASK_TYPE_PREFIX + TaskKind.QUARANTINE_RERUN.value == RERUN_TASK


def test_a_dead_letter_is_still_replayable_after_the_purge(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stripe's event was dead-lettered (its API failed through every attempt) with a critical
    alert; the operator replays it once Stripe is back. README: dead-lettered "with an alert
    after `MFX_MAX_ATTEMPTS`; `meterfix replay EVENT_ID` re-queues any event or task", and
    retention purges "older inbox events (processed ones)". A purge in between deleted the
    dead letter (never processed): the alert still open, `replay` answered "unknown event",
    and what Stripe reported was never recorded nor remediated."""
    event_id = intake.deliver(build_error_report_event("mtr_d", ERRORS))
    intake.sandbox.admin.inject_fault("GET", "/v2/core/events", 500, count=6)  # 3 attempts x 2
    for attempt in range(3):
        _shift_clock(monkeypatch, 1000 * attempt)
        intake.worker().drain()
    assert [(r.status, r.attempts) for r in _rows(intake)] == [(InboxStatus.DEAD, 3)]
    days = intake.settings.mfx_retention_days
    purge_expired(intake.engine, days, now=utcnow() + timedelta(days=days, hours=1))
    assert [r.event_id for r in _rows(intake)] == [event_id]
    result = intake.app.test_cli_runner().invoke(args=["replay", event_id])
    assert result.exit_code == 0 and "re-queued" in result.output, result.output
    assert intake.worker().drain().done == [event_id]
    with Session(intake.engine) as session:
        [report] = session.exec(select(ErrorReport)).all()
        dead = session.exec(select(Alert).where(Alert.kind == "inbox.dead_letter")).one()
    assert report.event_id == event_id and dead.status == "resolved"


def test_a_row_stripe_refused_is_sent_when_fixed_by_hand_after_a_short_retention(
    loop: Loop,
) -> None:
    """MFX_RETENTION_DAYS=7. The poller sent `g` and Stripe refused it (a customer it does not
    know, in an error report); meterfix quarantined it: never billed. Eight days later the
    customer fixed the row and uploaded the file again (Stripe takes usage up to 35 days
    old). README: quarantined rows are "how the poller and later re-runs know the row went
    out", and a version holding a refused row fixed by hand sends it. The purge had deleted
    the quarantined row (its run past retention), so the poller took `g` for a row an
    earlier version had billed and left it out: usage lost."""
    with bundled_poller(loop) as deps:
        other, row = a_row_stripe_refused(loop, deps)
        with loop.session() as session:
            [report_run] = session.exec(select(RemediationRun)).all()
        _purge_between(loop, report_run, retention_days=7)
        time.sleep(1)
        _put(loop, "day.csv", usage_csv([other, [*row[:3], "cus_alice", row[4]]]))
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "g"]


def test_a_row_meterfix_corrected_is_not_sent_again_when_fixed_by_hand_after_the_purge(
    loop: Loop,
) -> None:
    """MFX_RETENTION_DAYS=7. The poller refused `x` (a timestamp in milliseconds) and
    meterfix corrected it: `x-mfx1` billed. Eight days later the customer fixed the row by
    hand and uploaded the file again (Stripe takes usage up to 35 days old). README: a row
    meterfix corrected is never sent again from a version fixed by hand. The purge deleted
    the run's correction audit then (it is kept 35 days now, for loop protection); the poller
    also finds `x-mfx1` among its records of the corrected file it sent
    (`_resent_unchanged`), so `x` stays left out. (A guard: this held before the changes
    beside it.)"""
    now = int(time.time())
    row = ["x", (now - 60) * 1000, "api_requests", "cus_alice", "5"]
    other = ["a", now - 60, "api_requests", "cus_alice", "3"]
    _put(loop, "day.csv", usage_csv([other, row]))
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)  # a sent, x refused by the poller
        loop.drain()  # x corrected
        run_poll_pass(deps)  # the corrected file: x-mfx1
        with loop.session() as session:
            [first] = session.exec(select(RemediationRun)).all()
        _purge_between(loop, first, retention_days=7)
        time.sleep(1)
        fixed = [*row[:1], now - 60, *row[2:]]
        _put(loop, "day.csv", usage_csv([other, fixed]))
        run_poll_pass(deps)
        loop.drain()
    assert sorted(loop.accepted()) == ["a", "x-mfx1"]
    assert max(originals_billed(loop).values()) == 1
