"""The inbox worker against the real sandbox (real SDK, real sockets), SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

import service.worker.inbox
import service.worker.inbox_claims
from sandbox.events import build_error_report_event, build_import_set_event
from service.config import Settings
from service.db import make_engine
from service.models import (
    Alert,
    ErrorReport,
    ErrorSample,
    ErrorTypeCount,
    ImportSet,
    InboxEvent,
)
from service.models._types import as_utc
from service.models.inbox import InboxStatus
from service.worker.loop import InboxWorker
from service.worker.tasks import TaskKind, enqueue_task
from tests.integration.intake_helpers import inbox_rows, load_event, post_raw, sign
from tests.servers import serve_wsgi

ERRORS = [
    ("meter_event_customer_not_found", "Customer cus_x not found.", "id-1"),
    ("meter_event_customer_not_found", "Customer cus_y not found.", "id-2"),
    ("timestamp_in_future", "Timestamp is in the future.", "id-3"),
]


@dataclass
class Intake:
    url: str
    settings: Settings
    engine: Engine
    sandbox: Any
    app: Any

    def deliver(self, event: dict[str, Any]) -> str:
        stored = self.sandbox.admin.add_event(event)
        result = self.sandbox.admin.deliver(stored["id"], f"{self.url}/webhooks")
        assert result["status"] == 200, result
        return str(stored["id"])

    def worker(self, **kwargs: Any) -> InboxWorker:
        return InboxWorker(self.engine, self.settings, **kwargs)

    def count(self, model: Any) -> int:
        with Session(self.engine) as session:
            return int(session.exec(select(func.count()).select_from(model)).one())

    def fetches(self, event_id: str) -> int:
        path = f"/v2/core/events/{event_id}"
        return sum(1 for r in self.sandbox.admin.requests() if r["path"] == path)


@pytest.fixture
def intake(db_url: str, sandbox_server: Any, make_settings: Any, make_app: Any) -> Iterator[Intake]:
    settings = make_settings(
        database_url=db_url,
        stripe_api_key=sandbox_server.api_key,
        stripe_webhook_secrets=[sandbox_server.webhook_secret],
        stripe_api_base=sandbox_server.bases["api"],
        stripe_files_base=sandbox_server.bases["files"],
        mfx_max_attempts=3,
    )
    app = make_app(settings)
    engine = make_engine(db_url)
    with serve_wsgi(app) as server:
        yield Intake(server.url, settings, engine, sandbox_server, app)
    engine.dispose()


def _shift_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move the inbox's clock forward so scheduled retries are due now."""
    for module in (service.worker.inbox, service.worker.inbox_claims):
        monkeypatch.setattr(
            module, "utcnow", lambda: datetime.now(UTC) + timedelta(seconds=seconds)
        )


def test_thin_error_report_fetched_and_recorded(intake: Intake) -> None:
    event_id = intake.deliver(build_error_report_event("mtr_123", ERRORS))
    report = intake.worker().drain()
    assert report.done == [event_id] and report.failed == []
    assert intake.fetches(event_id) == 1
    [row] = inbox_rows(intake.settings.database_url)
    assert (row.status, row.attempts, row.locked_by) == (InboxStatus.DONE, 1, None)
    assert row.outcome and row.outcome.startswith("recorded")
    with Session(intake.engine) as session:
        stored = session.exec(select(ErrorReport)).one()
        counts = session.exec(select(ErrorTypeCount)).all()
        samples = session.exec(select(ErrorSample)).all()
    assert (stored.event_id, stored.meter_id, stored.error_count) == (event_id, "mtr_123", 3)
    assert stored.summary == "There are 3 invalid events"
    assert stored.validation_start is not None and stored.validation_end is not None
    assert {(c.code, c.error_count) for c in counts} == {
        ("meter_event_customer_not_found", 2),
        ("timestamp_in_future", 1),
    }
    assert sorted(s.identifier or "" for s in samples) == ["id-1", "id-2", "id-3"]


def test_snapshot_import_sets_recorded_without_fetch(intake: Intake) -> None:
    succeeded = load_event("snapshot_import_set_succeeded")
    failed = load_event("snapshot_import_set_failed")
    for event in (succeeded, failed):
        intake.deliver(event)
    assert sorted(intake.worker().drain().done) == sorted([succeeded["id"], failed["id"]])
    assert not [r for r in intake.sandbox.admin.requests() if r["path"].startswith("/v2/")]
    with Session(intake.engine) as session:
        rows = {r.import_set_id: r for r in session.exec(select(ImportSet)).all()}
    ok, bad = rows["impset_test_inferred_0001"], rows["impset_test_failed_0001"]
    assert (ok.errors_file_id, ok.errors_row_count, ok.remediation_status) == (
        "file_test_failedrecords0001",
        3,
        "pending",
    )
    assert (ok.source_file_id, ok.successes_row_count, ok.rows_processed) == (
        "file_test_sourceupload0001",
        97,
        100,
    )
    assert (bad.status, bad.remediation_status) == ("failed", "none")
    assert bad.failed_reason == "Missing required column: event_name"


def test_an_error_report_with_values_no_column_holds_is_recorded_at_once(intake: Intake) -> None:
    """Counts past 32 bits, a code or identifier past its column, a NUL in a message: on
    PostgreSQL each failed the insert (DataError), and the event was retried as if the failure
    were passing, then dead-lettered (its rows never remediated); SQLite took them as they
    came."""
    long_code, long_id = "c" * 300, "i" * 300
    event = build_error_report_event("mtr_p", [(long_code, "bad\x00message", long_id)])
    event["data"]["reason"]["error_count"] = 10**12
    event["data"]["reason"]["error_types"][0]["error_count"] = 10**13
    event["data"]["developer_message_summary"] = "1\x002"
    event_id = intake.deliver(event)
    report = intake.worker().drain()
    assert (report.done, report.retrying, report.dead) == ([event_id], [], [])
    with Session(intake.engine) as session:
        stored = session.exec(select(ErrorReport)).one()
        [counted] = session.exec(select(ErrorTypeCount)).all()
        [sample] = session.exec(select(ErrorSample)).all()
    assert (stored.error_count, stored.summary) == (2**31 - 1, "1\ufffd2")
    assert (counted.code, counted.error_count) == ("c" * 254 + "\u2026", 2**31 - 1)
    assert (sample.code, sample.message) == ("c" * 254 + "\u2026", "bad\ufffdmessage")
    assert sample.identifier == "i" * 254 + "\u2026"


def test_an_import_set_with_values_no_column_holds_is_recorded_and_remediated(
    intake: Intake,
) -> None:
    """As above, for a snapshot import set: its status past 64 characters, counts past 32
    bits, a NUL in its reason."""
    failed = load_event("snapshot_import_set_failed")
    obj = failed["data"]["object"]
    obj["status"], obj["failed_reason"] = "failed" + "!" * 70, "Missing\x00 column"
    succeeded = load_event("snapshot_import_set_succeeded")
    result = succeeded["data"]["object"]["result"]
    result["rows_processed"], result["errors"]["row_count"] = 10**30, 10**12
    result["successes"]["row_count"] = -5
    for event in (failed, succeeded):
        intake.deliver(event)
    report = intake.worker().drain()  # the remediation queued fails: no such file here
    task = "mfx_task_import_set_errors_impset_test_inferred_0001"
    assert [e for e, _ in report.retrying] == [task] and report.dead == []
    assert {failed["id"], succeeded["id"]} <= set(report.done)
    with Session(intake.engine) as session:
        rows = {r.import_set_id: r for r in session.exec(select(ImportSet)).all()}
    bad, ok = rows["impset_test_failed_0001"], rows["impset_test_inferred_0001"]
    assert (bad.status, bad.failed_reason) == (
        "failed" + "!" * 57 + "\u2026",
        "Missing\ufffd column",
    )
    assert (ok.rows_processed, ok.errors_row_count) == (2**31 - 1, 2**31 - 1)
    assert (ok.successes_row_count, ok.remediation_status) == (None, "pending")


def test_a_failure_whose_reason_holds_a_nul_is_recorded_and_retried(intake: Intake) -> None:
    """A reason quoting a NUL (from a file or an event): PostgreSQL refused to record it, so
    the row stayed claimed until its lease ran out, its failure nowhere."""
    with intake.engine.begin() as connection:
        enqueue_task(connection, TaskKind.POLLER_ROWS, "nul")

    def failing_task(_kind: TaskKind, _ref: str) -> str:
        raise ValueError("no object 'usage/a\x00b.csv'")

    report = intake.worker(task_runner=failing_task).drain()
    reason = "ValueError: no object 'usage/a\\x00b.csv'"
    assert [why for _, why in report.retrying] == [reason]
    [row] = _rows(intake)
    assert (row.status, row.attempts, row.last_error) == (InboxStatus.PENDING, 1, reason)
    assert row.locked_by is None


def test_reprocessing_changes_nothing(intake: Intake) -> None:
    event_id = intake.deliver(build_error_report_event("mtr_1", ERRORS))
    snapshot = intake.deliver(load_event("snapshot_import_set_succeeded"))
    intake.worker().drain()
    for replayed in (event_id, snapshot):
        assert service.worker.inbox.requeue(intake.engine, replayed)
    report = intake.worker().drain()
    assert sorted(report.done) == sorted([event_id, snapshot])
    assert [intake.count(m) for m in (ErrorReport, ErrorTypeCount, ErrorSample, ImportSet)] == [
        1,
        2,
        3,
        1,
    ]
    stripe_rows = [r for r in _rows(intake) if r.style != "task"]
    assert all(r.outcome and r.outcome.startswith("unchanged") for r in stripe_rows)


def _rows(intake: Intake) -> list[Any]:
    return inbox_rows(intake.settings.database_url)


def test_concurrent_deliveries_processed_once(intake: Intake) -> None:
    event = intake.sandbox.admin.add_event(build_error_report_event("mtr_c", ERRORS[:1]))
    barrier = threading.Barrier(5)
    statuses: list[int] = []

    def deliver() -> None:
        barrier.wait()
        statuses.append(
            intake.sandbox.admin.deliver(event["id"], f"{intake.url}/webhooks")["status"]
        )

    threads = [threading.Thread(target=deliver) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 5
    assert len(_rows(intake)) == 1
    assert intake.worker().drain().done == [event["id"]]
    assert intake.fetches(event["id"]) == 1 and intake.count(ErrorReport) == 1


def test_stripe_500_is_retried_within_30s(intake: Intake, monkeypatch: pytest.MonkeyPatch) -> None:
    event_id = intake.deliver(build_error_report_event("mtr_r", ERRORS))
    # The worker's client retries once itself: two 500s fail the first attempt.
    intake.sandbox.admin.inject_fault("GET", "/v2/core/events", 500, count=2)
    before = datetime.now(UTC)
    report = intake.worker().drain()
    assert report.done == [] and [e for e, _ in report.retrying] == [event_id]
    [row] = _rows(intake)
    assert (row.status, row.attempts) == (InboxStatus.PENDING, 1)
    assert row.last_error and "500" in row.last_error
    due = as_utc(row.next_attempt_at)
    assert due is not None and before < due <= before + timedelta(seconds=30)
    assert intake.worker().drain().done == []  # not due yet: a pass does not wait
    _shift_clock(monkeypatch, 31)
    assert intake.worker().drain().done == [event_id]
    assert intake.count(ErrorReport) == 1
    assert _rows(intake)[0].attempts == 2


def test_permanent_failure_dead_letters_then_replay(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    event_id = intake.deliver(build_error_report_event("mtr_d", ERRORS))
    intake.sandbox.admin.inject_fault("GET", "/v2/core/events", 500, count=6)  # 3 attempts x 2
    for attempt in range(3):
        _shift_clock(monkeypatch, 1000 * attempt)
        intake.worker().drain()
    [row] = _rows(intake)
    assert (row.status, row.attempts) == (InboxStatus.DEAD, 3)
    assert row.last_error and "500" in row.last_error
    with Session(intake.engine) as session:
        alert = session.exec(select(Alert)).one()
    assert alert.alert_key == f"inbox.dead:{event_id}" and alert.severity == "critical"
    result = intake.app.test_cli_runner().invoke(args=["replay", event_id])
    assert result.exit_code == 0 and "re-queued" in result.output
    assert _rows(intake)[0].status == InboxStatus.PENDING
    assert intake.worker().drain().done == [event_id]
    assert intake.count(ErrorReport) == 1 and intake.count(Alert) == 2
    with Session(intake.engine) as session:  # the success resolved the dead-letter alert
        dead = session.exec(select(Alert).where(Alert.kind == "inbox.dead_letter")).one()
        assert dead.status == "resolved"
        # and the report, about rows of no file of ours, raised its own warning
        unmatched = session.exec(select(Alert).where(Alert.kind != "inbox.dead_letter")).one()
        assert (unmatched.kind, unmatched.status) == ("error_report.unmatched", "open")


def test_replay_unknown_event_fails_clearly(intake: Intake) -> None:
    result = intake.app.test_cli_runner().invoke(args=["replay", "evt_nope"])
    assert result.exit_code != 0 and "unknown event: evt_nope" in result.output


def test_unknown_type_is_ignored_and_never_fetched(intake: Intake) -> None:
    event = load_event("thin_unknown_type")
    body = json.dumps(event)
    response = post_raw(intake.url, body, sign(body, intake.sandbox.webhook_secret))
    assert response.json()["status"] == "ignored"
    report = intake.worker().drain()
    assert report.done == [] and report.ignored == []
    assert intake.fetches(event["id"]) == 0
    assert _rows(intake)[0].status == InboxStatus.IGNORED


def test_two_workers_never_take_the_same_row(intake: Intake) -> None:
    ids = [
        intake.deliver(
            build_import_set_event("succeeded", {"id": f"impset_{n}", "status": "succeeded"})
        )
        for n in range(12)
    ]
    reports = []

    def run() -> None:
        reports.append(intake.worker().drain())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done = [event_id for report in reports for event_id in report.done]
    assert sorted(done) == sorted(ids)  # each exactly once
    assert all(r.attempts == 1 and r.status == InboxStatus.DONE for r in _rows(intake))
    assert intake.count(ImportSet) == 12


def test_backoff_schedule() -> None:
    import random

    from service.worker.inbox_claims import backoff_seconds

    rng = random.Random(7)
    first = [backoff_seconds(1, rng) for _ in range(200)]
    assert all(7.5 <= delay <= 15 for delay in first)  # the first retry comes within 30 s
    later = [backoff_seconds(n, rng) for n in range(2, 30) for _ in range(20)]
    assert all(delay <= 900 for delay in later) and max(later) > 450
    assert backoff_seconds(3, rng) > 30  # it does grow


def _alert(intake: Intake) -> Alert:
    with Session(intake.engine) as session:
        return session.exec(select(Alert)).one()


def test_unusable_event_is_dead_lettered_at_once(intake: Intake) -> None:
    event = load_event("snapshot_import_set_succeeded")
    del event["data"]["object"]["id"]
    event_id = intake.deliver(event)
    report = intake.worker().drain()
    reason = "unusable event: import set event: data.object has no id"
    assert report.dead == [(event_id, reason)] and report.retrying == []
    [row] = _rows(intake)
    assert (row.status, row.attempts, row.last_error) == (InboxStatus.DEAD, 1, reason)
    alert = _alert(intake)
    assert (alert.alert_key, alert.message) == (f"inbox.dead:{event_id}", f"not retried: {reason}")
    with Session(intake.engine) as session:  # an operator repairs the stored body, replays it
        stored = session.exec(select(InboxEvent)).one()
        event["data"]["object"]["id"] = "impset_repaired_1"
        stored.body = json.dumps(event)
        session.add(stored)
        session.commit()
    assert service.worker.inbox.requeue(intake.engine, event_id)
    assert intake.worker().drain().done == [event_id]
    assert _alert(intake).status == "resolved"


def test_a_stuck_item_is_failed_at_its_time_limit_and_retried(intake: Intake) -> None:
    with intake.engine.begin() as connection:
        enqueue_task(connection, TaskKind.POLLER_ROWS, "stuck")
    release = threading.Event()

    def stuck_task(_kind: TaskKind, _ref: str) -> str:
        release.wait(20)
        return "finished late"

    settings = intake.settings.model_copy(update={"mfx_task_time_limit": 1})
    worker = InboxWorker(intake.engine, settings, task_runner=stuck_task)
    started = time.monotonic()
    report = worker.drain()
    assert time.monotonic() - started < 5
    [(_, reason)] = report.retrying
    assert reason.startswith("exceeded the 1 s time limit") and report.abandoned
    [row] = _rows(intake)
    assert (row.status, row.attempts, row.locked_by) == (InboxStatus.PENDING, 1, None)
    assert row.last_error == reason and row.next_attempt_at is not None
    release.set()  # the abandoned thread finishes: the row is no longer its to mark done
    time.sleep(0.5)
    assert _rows(intake)[0].status == InboxStatus.PENDING


def _died_on_every_attempt(intake: Intake) -> None:
    """The one inbox item claimed its max attempts, each worker dying on it."""
    with Session(intake.engine) as session:
        row = session.exec(select(InboxEvent)).one()
        row.status, row.attempts = InboxStatus.PROCESSING, intake.settings.mfx_max_attempts
        row.locked_by, row.locked_at = "dead:1:x", datetime.now(UTC) - timedelta(hours=1)
        session.add(row)
        session.commit()


def test_an_item_that_keeps_killing_workers_is_dead_lettered(intake: Intake) -> None:
    event_id = intake.deliver(build_error_report_event("mtr_p", ERRORS))
    _died_on_every_attempt(intake)
    report = intake.worker().drain()
    assert [e for e, _ in report.dead] == [event_id] and intake.fetches(event_id) == 0
    [row] = _rows(intake)
    assert row.status == InboxStatus.DEAD and "stopped without finishing" in (row.last_error or "")


def test_a_dead_lettered_task_fails_the_run_it_left_running(intake: Intake) -> None:
    """A task whose workers died on it (SIGKILL, out of memory) until it was dead-lettered
    left its run `running` for good: no end, no error, the run's page saying it was in
    progress. Now the dead letter fails the task's running runs with the reason; another
    task's running run is left alone (a worker may be working on it)."""
    from service.jobs.store.runs import start_run
    from service.models import RemediationRun, RunStatus
    from service.worker.tasks import task_id

    with intake.engine.begin() as connection:
        enqueue_task(connection, TaskKind.QUARANTINE_RERUN, "7")
    mine = start_run(
        intake.engine,
        "rerun:7",
        "quarantine_rerun",
        "q",
        1,
        0,
        task_id(TaskKind.QUARANTINE_RERUN, "7"),
    )
    other = start_run(
        intake.engine,
        "rerun:8",
        "quarantine_rerun",
        "q",
        1,
        0,
        task_id(TaskKind.QUARANTINE_RERUN, "8"),
    )
    _died_on_every_attempt(intake)
    report = intake.worker().drain()
    assert [e for e, _ in report.dead] == ["mfx_task_quarantine_rerun_7"]
    with Session(intake.engine) as session:
        runs = {r.id: r for r in session.exec(select(RemediationRun)).all()}
    failed, running = runs[mine], runs[other]
    assert failed.status == RunStatus.FAILED and failed.finished_at is not None
    assert (failed.error or "").startswith("dead-lettered: ")
    assert "stopped without finishing" in (failed.error or "")
    assert (running.status, running.error, running.finished_at) == (RunStatus.RUNNING, None, None)
    with Session(intake.engine) as session:
        [alert] = session.exec(select(Alert).where(Alert.kind == "inbox.dead_letter")).all()
    # meterfix's own work, not "Stripe event mfx_task_..." as it said
    assert alert.subject.startswith("Task mfx_task_quarantine_rerun_7 (")


def test_default_lease_and_heartbeat(make_settings: Any) -> None:
    from service.worker.liveness import heartbeat_interval

    settings = make_settings()
    assert (settings.mfx_worker_lease, settings.mfx_task_time_limit) == (30, 900)
    assert heartbeat_interval(settings.mfx_worker_lease) == 10  # three renewals per lease
    assert heartbeat_interval(1) == pytest.approx(1 / 3)
