# ruff: noqa: F811  (the `intake` and `service` fixtures imported from the modules that define them)
"""`meterfix replay` and the worker at their edges: an item a live worker holds, a lowered
`MFX_MAX_ATTEMPTS`, a database never migrated, the alert of a task whose input was missing.
Each test failed on the code before its fix (the docstrings say what went wrong)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlmodel import Session, select

from sandbox.events import build_import_set_event
from service.config import Settings
from service.models import Alert, InboxEvent, RemediationRun
from service.models.inbox import InboxStatus
from service.worker.loop import InboxWorker
from service.worker.tasks import TaskKind, enqueue_task, task_id
from tests.integration.test_remediation_tasks import (  # noqa: F401  (the `service` fixture)
    Service,
    service,
)
from tests.integration.test_worker import (  # noqa: F401  (the `intake` fixture)
    Intake,
    _rows,
    _shift_clock,
    intake,
)
from tests.integration.test_worker_cli_edges import _cli, _env


def _alerts(engine: Any, kind: str) -> list[Alert]:
    with Session(engine) as session:
        return list(session.exec(select(Alert).where(Alert.kind == kind)).all())


def test_replay_of_an_item_a_live_worker_holds_is_refused(intake: Intake) -> None:
    """README (Liveness): "a slow but alive worker keeps it and a dead worker's item is taken
    over within a minute". `meterfix replay` of a task a live worker was running re-queued
    it ("re-queued", exit 0): a second worker took it and ran the same remediation at the
    same time as the first, whose own finish then failed as a lost lease and was retried."""
    with intake.engine.begin() as connection:
        enqueue_task(connection, TaskKind.POLLER_ROWS, "held")
    held = task_id(TaskKind.POLLER_ROWS, "held")
    entered, release, runs = threading.Event(), threading.Event(), []

    def slow_task(_kind: TaskKind, ref: str) -> str:
        runs.append(ref)
        if len(runs) == 1:  # the first worker's run: it is at work until released
            entered.set()
            release.wait(20)
        return "remediated"

    first = threading.Thread(target=intake.worker(task_runner=slow_task).drain)
    first.start()
    try:
        assert entered.wait(20), "the first worker never started the task"
        result = intake.app.test_cli_runner().invoke(args=["replay", held])
        second = intake.worker(task_runner=slow_task).drain()  # another worker's pass
    finally:
        release.set()
        first.join(20)
    assert result.exit_code != 0, result.output
    [line] = result.output.strip().splitlines()
    assert (
        line.startswith(f"Error: {held} is being processed by worker ") and "not re-queued" in line
    )
    assert second.done == [] and runs == ["held"]  # the task ran once
    [row] = _rows(intake)
    assert (row.status, row.attempts, row.outcome) == (InboxStatus.DONE, 1, "remediated")


def test_replay_of_an_item_whose_worker_died_requeues_it(intake: Intake) -> None:
    """README: "A worker killed mid-way loses nothing: its lease expires and another worker
    redoes the item." Past its lease, the row of a dead worker is no longer held: replay
    re-queues it (this passed before the fix too; the refusal must not block it)."""
    with intake.engine.begin() as connection:
        enqueue_task(connection, TaskKind.POLLER_ROWS, "orphan")
    with Session(intake.engine) as session:  # its worker died an hour ago
        row = session.exec(select(InboxEvent)).one()
        row.status, row.attempts = InboxStatus.PROCESSING, 2
        row.locked_by, row.locked_at = "dead:1:x", datetime.now(UTC) - timedelta(hours=1)
        session.add(row)
        session.commit()
    orphan = task_id(TaskKind.POLLER_ROWS, "orphan")
    result = intake.app.test_cli_runner().invoke(args=["replay", orphan])
    assert result.exit_code == 0 and f"{orphan} re-queued" in result.output
    [row] = _rows(intake)
    assert (row.status, row.attempts, row.locked_by) == (InboxStatus.PENDING, 0, None)


def test_lowering_max_attempts_gives_a_retried_item_its_next_attempt(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: `MFX_MAX_ATTEMPTS` is the "attempts before an event or task is dead-lettered";
    "an item that keeps killing workers is dead-lettered after `MFX_MAX_ATTEMPTS`". Two tasks
    had failed twice (limit 3); the limit lowered to 1, the next worker dead-lettered both
    without running them, as "the worker processing it stopped without finishing on its last
    attempt (killed, crashed, or stuck past its time limit)": no worker had stopped, and the
    one whose Stripe outage was over was never tried again."""
    with intake.engine.begin() as connection:
        for ref in ("recovers", "still_failing"):
            enqueue_task(connection, TaskKind.POLLER_ROWS, ref)

    def outage(_kind: TaskKind, _ref: str) -> str:
        raise ValueError("Stripe answered 500")

    for attempt in range(2):
        _shift_clock(monkeypatch, 1000 * attempt)
        assert len(intake.worker(task_runner=outage).drain().retrying) == 2
    _shift_clock(monkeypatch, 2000)
    ran: list[str] = []

    def after_outage(_kind: TaskKind, ref: str) -> str:
        ran.append(ref)
        if ref == "still_failing":
            raise ValueError("Stripe answered 500 again")
        return "remediated"

    lowered = intake.settings.model_copy(update={"mfx_max_attempts": 1})
    report = InboxWorker(intake.engine, lowered, task_runner=after_outage).drain()
    assert sorted(ran) == ["recovers", "still_failing"]  # each had its next attempt
    reason = "ValueError: Stripe answered 500 again"
    assert report.done == [task_id(TaskKind.POLLER_ROWS, "recovers")]
    assert report.dead == [(task_id(TaskKind.POLLER_ROWS, "still_failing"), reason)]
    rows = {row.event_id: row for row in _rows(intake)}
    done = rows[task_id(TaskKind.POLLER_ROWS, "recovers")]
    dead = rows[task_id(TaskKind.POLLER_ROWS, "still_failing")]
    assert (done.status, done.attempts, done.outcome) == (InboxStatus.DONE, 3, "remediated")
    assert (dead.status, dead.attempts, dead.last_error) == (InboxStatus.DEAD, 3, reason)
    [alert] = _alerts(intake.engine, "inbox.dead_letter")
    assert alert.message == f"gave up after 3 attempts: {reason}"


def test_replay_on_a_database_never_migrated_says_to_upgrade(
    sandbox_server: Any, tmp_path: Path
) -> None:
    """README: "Every command exits non-zero with one clear line on failure." `meterfix
    replay` on a database never migrated said "database unavailable: OperationalError" (the
    database was there: it had no tables), where `meterfix worker` says to run `meterfix db
    upgrade`."""
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = _env(fresh, sandbox_server, sandbox_server.url)
    # `meterfix poll --once` said "database unavailable: OperationalError" too
    for args in (["replay", "evt_1"], ["poll", "--once"]):
        result = _cli(args, env, tmp_path)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line == "Error: the database is not migrated: run `meterfix db upgrade` first"


def test_a_successful_replay_resolves_the_missing_input_alert(
    service: Service, make_app: Callable[[Settings], Flask]
) -> None:
    """README: "a later success of a dead-lettered item resolves its alert". A task whose input
    was missing (a failed import set whose source object was not in the bucket) ended `done`
    with a critical alert; the object put back and the task replayed, the run was done but
    the alert stayed open, telling the on-call the file was still unremediated."""
    body = {
        "id": "impset_late",
        "object": "data_management.import_set",
        "status": "failed",
        "failed_reason": "Unparseable file",
        "source_object": "in/late.csv",
    }
    service.deliver(build_import_set_event("data_management.import_set.failed", body))
    service.drain()
    [alert] = _alerts(service.engine, "remediation_input")
    assert (alert.status, alert.severity) == ("open", "critical")
    assert "source of import set impset_late not found" in alert.message
    now = int(time.time()) - 60
    bucket = Path(service.settings.bucket_url.removeprefix("file://"))
    (bucket / "in").mkdir(parents=True)
    (bucket / "in" / "late.csv").write_text(  # the operator puts the object back
        "identifier;timestamp;event_name;payload_stripe_customer_id;payload_value\n"
        f"l1;{now};api_requests;cus_1;5\n"
    )
    late = task_id(TaskKind.IMPORT_SET_FAILED, "impset_late")
    result = make_app(service.settings).test_cli_runner().invoke(args=["replay", late])
    assert result.exit_code == 0, result.output
    service.drain()
    [run] = service.rows(RemediationRun)
    assert (run.source, run.status) == ("in/late.csv", "done")
    [alert] = _alerts(service.engine, "remediation_input")
    assert alert.status == "resolved"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "empty file: nothing to import (dropped)"),
        (b"\xef\xbb\xbf \n", "empty file: nothing to import (dropped)"),
        (
            b"identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n",
            "no usage rows: nothing to import (dropped)",
        ),
    ],
    ids=["no-bytes", "bom-and-space", "header-only"],
)
def test_a_whole_file_failure_of_an_empty_file_is_dropped_not_alerted_as_critical(
    service: Service, body: bytes, why: str
) -> None:
    """DESIGN (whole-file failures): "empty files dropped". An import set failed on an empty
    file (or a header only) raised a critical "cannot remediate" alert, and a header-only
    file's empty run uploaded an audit file. Now the import set is done with no run, and an
    info alert says the file was dropped."""
    bucket = Path(service.settings.bucket_url.removeprefix("file://"))
    (bucket / "in").mkdir(parents=True)
    (bucket / "in" / "empty.csv").write_bytes(body)
    event = {
        "id": "impset_empty",
        "object": "data_management.import_set",
        "status": "failed",
        "failed_reason": "The file is empty",
        "source_object": "in/empty.csv",
    }
    service.deliver(build_import_set_event("data_management.import_set.failed", event))
    service.drain()
    assert service.rows(RemediationRun) == []
    [alert] = _alerts(service.engine, "remediation_input")
    assert (alert.severity, alert.status) == ("info", "open")
    assert alert.subject == "import set impset_empty: in/empty.csv dropped"
    assert alert.message == f"in/empty.csv: {why}"
    [task] = [row for row in service.rows(InboxEvent) if row.style == "task"]
    assert (task.status, task.outcome) == ("done", f"dropped: {why}")
    files = [p.relative_to(bucket) for p in bucket.rglob("*") if p.is_file()]
    assert files == [Path("in/empty.csv")]  # no output, no audit file
