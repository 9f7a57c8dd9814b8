"""A worker whose lease expired while its process was paused (SIGSTOP past the lease: a long
GC pause, a starved container) and whose item another worker took over: resumed, it went on
and did the item anyway (uploaded the corrected file, committed the run), while the worker
that took it over found nothing left and recorded "no quarantined rows to re-run". Now the
resumed worker gives the item up and writes nothing; the one holding the item does it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from service.config import Settings
from service.db import make_engine
from service.errors import LeaseLost
from service.jobs.quarantine_rerun import RERUN_LOCK_KEY
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.models import CorrectionAudit, InboxEvent, QuarantinedRow, RemediationRun
from service.web.actions import Actor, queue_rerun
from service.worker.inbox import TAKEN_OVER
from service.worker.item_lease import lease_as_lock
from service.worker.loop import InboxWorker
from service.worker.supervisor import SUPERVISOR_ENV
from service.worker.tasks import TaskKind, enqueue_task
from tests.integration.test_e2e import Loop, running_loop
from tests.integration.test_lock_lost import quarantine_unknown_customers

MFX = str(Path(sys.executable).parent / "meterfix")
LEASE = 2  # seconds: the paused worker loses it quickly
RERUN_TASK = "meterfix.remediate.quarantine_rerun"


@pytest.fixture
def loop(
    pg_url: str, s3_endpoint: str, tmp_path: Path, make_app: Callable[[Settings], Flask]
) -> Iterator[Loop]:
    with running_loop(pg_url, s3_endpoint, tmp_path, make_app) as running:
        yield running


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "MFX_"))}
    env.update(
        DATABASE_URL=settings.database_url,
        BUCKET_URL=settings.bucket_url,
        S3_ENDPOINT_URL=str(settings.s3_endpoint_url),
        STRIPE_API_KEY=str(settings.stripe_api_key),
        STRIPE_WEBHOOK_SECRETS=",".join(settings.stripe_webhook_secrets),
        STRIPE_API_BASE=str(settings.stripe_api_base),
        STRIPE_FILES_BASE=str(settings.stripe_files_base),
        STRIPE_METER_EVENTS_BASE=str(settings.stripe_meter_events_base),
        MFX_RULES=str(settings.mfx_rules),
        MFX_WORK_DIR=str(settings.mfx_work_dir),
        MFX_POLLER="off",
        MFX_WORKER_INTERVAL="0.1",
        MFX_WORKER_LEASE=str(LEASE),
        LOG_FORMAT="json",
    )
    return env


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _task(engine: Engine) -> InboxEvent:
    with Session(engine) as session:
        return session.exec(select(InboxEvent).where(InboxEvent.event_type == RERUN_TASK)).one()


def _lock_waiters(engine: Engine) -> int:
    """Connections waiting for an advisory lock (the re-run lock the test holds)."""
    with engine.connect() as connection:
        query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        return int(connection.execute(text(query)).scalar_one())


def test_a_worker_paused_past_its_lease_gives_the_item_up_and_writes_nothing(
    loop: Loop, tmp_path: Path
) -> None:
    """Four rows quarantined (a customer Stripe does not know), then mapped, and "Re-run"
    clicked. Worker A claims the re-run and waits for its turn (the re-run lock, held here);
    A is paused past its lease; worker B takes the re-run over and waits for its turn too;
    the lock is let go (A, first in line, gets it) and A resumed. A gives the item up (no
    corrected file, no run, no outcome of its own); B re-runs the four rows."""
    quarantine_unknown_customers(loop)
    before = {key for key in loop.objects() if ".corrected." in key}
    env = _env(loop.settings)
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    queue_rerun(loop.engine, QuarantineFilter(), Actor("api", "127.0.0.1"))
    with loop.engine.connect() as turn:  # the re-run lock, as a re-run before this one holds it
        key = turn.execute(
            text("SELECT hashtextextended(current_database() || '.' || current_schema(), :seed)"),
            {"seed": RERUN_LOCK_KEY},
        ).scalar_one()
        turn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        turn.commit()
        # run as its own supervisor's child: SIGSTOP reaches the worker itself
        a_env = {**env, SUPERVISOR_ENV: str(os.getpid())}
        with a_log.open("w") as a_err:
            a = subprocess.Popen([MFX, "worker"], env=a_env, cwd=tmp_path, stderr=a_err)
        b: subprocess.Popen[bytes] | None = None
        try:
            _wait_for(lambda: _lock_waiters(loop.engine) == 1, 20, "A waiting for its turn")
            a_id = _task(loop.engine).locked_by
            a.send_signal(signal.SIGSTOP)
            time.sleep(LEASE + 1)  # A's lease expires
            with b_log.open("w") as b_err:
                b = subprocess.Popen([MFX, "worker", "--once"], env=env, cwd=tmp_path, stderr=b_err)
            _wait_for(lambda: _lock_waiters(loop.engine) == 2, 20, "B waiting for its turn")
            taken = _task(loop.engine)
            assert (taken.attempts, taken.status) == (2, "processing")
            assert taken.locked_by not in (None, a_id)
            turn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            turn.commit()
            a.send_signal(signal.SIGCONT)
            assert b.wait(30) == 0, b_log.read_text()
        finally:
            a.send_signal(signal.SIGCONT)
            a.terminate()
            a.wait(15)
            if b is not None and b.poll() is None:
                b.kill()
    task = _task(loop.engine)
    with loop.session() as session:
        runs = session.exec(select(RemediationRun)).all()
        reruns = [r for r in runs if r.task_id == task.event_id]
        audit = session.exec(select(CorrectionAudit)).all()
        held = session.exec(select(QuarantinedRow)).all()
    a_said = a_log.read_text()
    # B's outcome stands, and it is the re-run's: four rows corrected in one run
    assert (task.status, task.attempts, task.locked_by) == ("done", 2, None)
    assert "no quarantined rows" not in (task.outcome or ""), task.outcome
    assert len(reruns) == 1, [(r.id, r.status, r.task_id) for r in runs]
    assert (reruns[0].status, reruns[0].corrected) == ("done", 4)
    assert {q.rerun_id for q in held} == {reruns[0].id}
    corrected = sorted(str(a.new_identifier) for a in audit if a.rule == "map_customer")
    assert corrected == [f"c{i}-mfx1" for i in range(1, 5)]  # each row once
    outputs = {key for key in loop.objects() if ".corrected." in key} - before
    assert len(outputs) == 1, outputs
    # A gave the item up, saying so, and wrote nothing of it
    assert '"inbox.given_up"' in a_said and task.event_id in a_said, a_said
    assert '"remediation.run_done"' not in a_said and '"inbox.processed"' not in a_said, a_said
    assert '"inbox.failed"' not in a_said, a_said
    assert '"inbox.processed"' in b_log.read_text()


# --- in-process: the heartbeat finding the lease lost, and a run's check before an upload ---


def _take_over(engine: Engine, event_id: str) -> None:
    """Another worker claims the row (its lease expired meanwhile): a new attempt, its own."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE inbox_events SET locked_by = 'other-worker', attempts = attempts + 1, "
                "last_error = :mark WHERE event_id = :event_id"
            ),
            {"mark": TAKEN_OVER, "event_id": event_id},
        )


def _poller_task(engine: Engine) -> InboxEvent:
    with engine.begin() as connection:
        enqueue_task(connection, TaskKind.POLLER_ROWS, "rows-1")
    with Session(engine) as session:
        return session.exec(select(InboxEvent)).one()


def test_a_lease_found_lost_by_the_heartbeat_gives_the_busy_item_up(
    db_url: str, make_settings: Callable[..., Settings]
) -> None:
    """The item's thread is busy (no check of its own); the heartbeat's renewal finds the row
    taken over: the worker gives the item up at once, its thread left behind (the process
    restarts), and what that thread returns later is never recorded."""
    engine = make_engine(db_url)
    task = _poller_task(engine)
    taken, release = threading.Event(), threading.Event()

    def busy(_kind: TaskKind, _ref: str) -> str:
        _take_over(engine, task.event_id)
        taken.set()
        release.wait(20)
        return "remediated 4 rows"

    settings = make_settings(database_url=db_url, mfx_worker_lease=1)
    started = time.monotonic()
    report = InboxWorker(engine, settings, task_runner=busy).drain()
    assert time.monotonic() - started < 5  # one renewal (a third of the lease) and a little
    assert (report.given_up, report.abandoned, report.done, report.failed) == (
        [task.event_id],
        True,
        [],
        [],
    )
    release.set()
    time.sleep(0.5)  # the thread left behind returns: its outcome is not the row's
    with Session(engine) as session:
        row = session.exec(select(InboxEvent)).one()
    assert (row.status, row.attempts, row.locked_by, row.outcome) == (
        "processing",
        2,
        "other-worker",
        None,
    )
    engine.dispose()


def test_a_run_checks_the_lease_before_it_uploads(
    db_url: str, make_settings: Callable[..., Settings]
) -> None:
    """On the item's thread, the locks a task's runs are done under hold its lease: taken
    over, the check before an upload stops the item (LeaseLost), nothing recorded, and the
    worker goes on (the thread has ended: no restart)."""
    engine = make_engine(db_url)
    task = _poller_task(engine)
    checked: list[str] = []

    def uploading(_kind: TaskKind, _ref: str) -> str:
        [lease] = lease_as_lock()
        lease.check()  # held: no error
        _take_over(engine, task.event_id)
        try:
            lease.check()
        except LeaseLost as exc:
            checked.append(exc.reason)
            raise
        return "uploaded after the lease was lost"

    settings = make_settings(database_url=db_url)
    report = InboxWorker(engine, settings, task_runner=uploading).drain()
    assert (report.given_up, report.abandoned, report.failed) == ([task.event_id], False, [])
    assert checked == [
        f"the lease on {task.event_id} was lost (another worker took the item over): "
        "given up, nothing recorded"
    ]
    with Session(engine) as session:
        row = session.exec(select(InboxEvent)).one()
    assert (row.status, row.locked_by, row.outcome, row.last_error) == (
        "processing",
        "other-worker",
        None,
        TAKEN_OVER,
    )
    assert lease_as_lock() == ()  # off an item's thread: no lease
    engine.dispose()
