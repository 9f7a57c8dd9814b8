# ruff: noqa: F811  (the `intake` and `service` fixtures imported from the modules that define them)
"""Re-queuing an inbox item at its edges: an item a live worker holds (one item never runs on
two workers at once, and the run asked for is not lost), and the "taken over" mark of an item
whose worker died, which must not outlive that take-over. Each test failed on the code before
its fix (the docstrings say what went wrong)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, select

from sandbox.events import build_import_set_event
from service.models import ImportSet, InboxEvent, RemediationRun
from service.models.inbox import InboxStatus
from service.runtime import Runtime
from service.worker.inbox import requeue
from service.worker.inbox_claims import claim_next
from service.worker.loop import InboxWorker
from service.worker.task_runner import TaskRunner
from service.worker.tasks import TaskKind, enqueue_task, task_id
from tests.integration.test_import_set_events import HEADER, _bucket, _corrected_ids
from tests.integration.test_remediation_tasks import (  # noqa: F401  (the `service` fixture)
    Service,
    service,
)
from tests.integration.test_worker import (  # noqa: F401  (the `intake` fixture)
    Intake,
    _rows,
    intake,
)

TaskFn = Callable[[TaskKind, str], str]


class OneAtATime:
    """A task runner that counts how many of its runs overlap; its first run stays at work
    (after `work`, before returning) until `release` is set."""

    def __init__(self, work: TaskFn) -> None:
        self.work = work
        self.entered, self.release = threading.Event(), threading.Event()
        self.runs: list[str] = []
        self.running = self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, kind: TaskKind, ref: str) -> str:
        with self._lock:
            self.runs.append(ref)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            first = len(self.runs) == 1
        try:
            outcome = self.work(kind, ref)
            if first:
                self.entered.set()
                self.release.wait(20)
            return outcome
        finally:
            with self._lock:
                self.running -= 1


def _orphan(engine: Engine, ref: str, attempts: int) -> str:
    """A task row whose worker died an hour ago, mid-attempt `attempts`."""
    with engine.begin() as connection:
        enqueue_task(connection, TaskKind.POLLER_ROWS, ref)
    with Session(engine) as session:
        row = session.exec(select(InboxEvent)).one()
        row.status, row.attempts = InboxStatus.PROCESSING, attempts
        row.locked_by, row.locked_at = "dead:1:x", datetime.now(UTC) - timedelta(hours=1)
        session.add(row)
        session.commit()
    return task_id(TaskKind.POLLER_ROWS, ref)


def test_requeue_of_an_item_a_live_worker_holds_runs_it_after_not_beside(intake: Intake) -> None:
    """README (Liveness): "a slow but alive worker keeps it". `requeue` (what handlers and the
    poller call to have a task run again) made the row pending whatever its state: while the
    first worker was still running the task, a second worker took it and ran it beside the
    first (two runs at once), and the first one's finish failed as a lost lease."""
    with intake.engine.begin() as connection:
        enqueue_task(connection, TaskKind.POLLER_ROWS, "held")
    held = task_id(TaskKind.POLLER_ROWS, "held")
    runner = OneAtATime(lambda _kind, _ref: "remediated")
    first = intake.worker(task_runner=runner)
    thread = threading.Thread(target=first.drain)
    thread.start()
    try:
        assert runner.entered.wait(20), "the first worker never started the task"
        assert requeue(intake.engine, held)  # asked again: it will run again
        second = intake.worker(task_runner=runner).drain()  # another worker's pass
        [row] = _rows(intake)
        assert (row.status, row.locked_by) == (InboxStatus.PROCESSING, first.worker_id)
        assert second.done == [] and runner.runs == ["held"]
    finally:
        runner.release.set()
        thread.join(20)
    # finished, then due again for the run asked for meanwhile: the same pass took it again
    assert runner.runs == ["held", "held"] and runner.most_at_once == 1
    [row] = _rows(intake)
    assert (row.status, row.attempts, row.locked_by) == (InboxStatus.DONE, 1, None)
    assert (row.outcome, row.next_attempt_at) == ("remediated", None)


def _import_set_event(svc: Service, file_id: str, created: int) -> dict[str, object]:
    body = {
        "id": "impset_busy",
        "object": "data_management.import_set",
        "status": "succeeded_with_errors",
        "result": {"errors": {"file": file_id, "row_count": 1}},
    }
    return build_import_set_event("succeeded", body, created=created)


def test_a_new_failed_records_file_while_its_task_runs_is_remediated_after_it(
    service: Service,
) -> None:
    """The import set came again naming another failed-records file while a worker was still
    running its task (for the first file). The handler's re-queue made the task pending under
    the running worker: the next worker ran it at the same time as the first (two remediations
    of one import set at once), and the first's finish was lost as a taken-over lease."""
    now = int(time.time()) - 120
    header = HEADER.rstrip("\n") + ",error_code\n"
    files = [
        service.sandbox.admin.upload_file(
            header + f"{ident},{now * 1000},api_requests,cus_1,3,timestamp_in_future\n", name
        )
        for ident, name in (("b1", "failed1.csv"), ("b2", "failed2.csv"))
    ]
    runner = OneAtATime(TaskRunner(Runtime(service.settings, engine=service.engine)))

    def worker() -> InboxWorker:
        return InboxWorker(service.engine, service.settings, task_runner=runner)

    service.deliver(_import_set_event(service, files[0]["id"], now))
    thread = threading.Thread(target=worker().drain)  # the event, then its task (held)
    thread.start()
    try:
        assert runner.entered.wait(30), "the first worker never ran the task"
        service.deliver(_import_set_event(service, files[1]["id"], now + 60))
        worker().drain()  # records the new file, asks for the task again
    finally:
        runner.release.set()
        thread.join(30)
    assert runner.most_at_once == 1, "the task ran on two workers at once"
    worker().drain()  # the run asked for while the first one ran
    assert runner.most_at_once == 1 and len(runner.runs) == 2
    [impset] = service.rows(ImportSet)
    assert (impset.errors_file_id, impset.remediation_status) == (files[1]["id"], "done")
    assert sorted(_corrected_ids(_bucket(service))) == ["b1-mfx1", "b2-mfx1"]
    assert sorted(run.source for run in service.rows(RemediationRun)) == sorted(
        f["id"] for f in files
    )
    with Session(service.engine) as session:
        task = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).one()
    assert (task.status, task.locked_by) == (InboxStatus.DONE, None)


def test_an_item_taken_over_then_handed_back_gets_its_next_attempt_when_the_limit_is_lowered(
    intake: Intake,
) -> None:
    """README: "an item that keeps killing workers is dead-lettered after MFX_MAX_ATTEMPTS".
    An item taken over from a dead worker was handed back (its new worker stopped cleanly);
    its "taken over" mark stayed in `last_error`, so with the limit lowered the next worker
    dead-lettered it unrun as "stopped without finishing", though no worker had died since."""
    orphan = _orphan(intake.engine, "orphan", attempts=2)
    runner = OneAtATime(lambda _kind, _ref: "remediated")
    stop = threading.Event()
    taker = threading.Thread(target=intake.worker(task_runner=runner).drain, args=(stop,))
    taker.start()
    assert runner.entered.wait(20), "the worker never took the orphan over"
    stop.set()  # SIGTERM mid-item: handed back
    taker.join(20)
    runner.release.set()
    [row] = _rows(intake)
    assert (row.status, row.attempts, row.locked_by) == (InboxStatus.PENDING, 2, None)
    ran: list[str] = []

    def task(_kind: TaskKind, ref: str) -> str:
        ran.append(ref)
        return "remediated"

    lowered = intake.settings.model_copy(update={"mfx_max_attempts": 2})
    report = InboxWorker(intake.engine, lowered, task_runner=task).drain()
    assert report.dead == [] and report.done == [orphan] and ran == ["orphan"]
    [row] = _rows(intake)
    assert (row.status, row.attempts, row.outcome) == (InboxStatus.DONE, 3, "remediated")
    assert row.last_error is None  # the hand-back ended the take-over


def test_a_replayed_item_once_taken_over_is_claimed_as_a_fresh_attempt(intake: Intake) -> None:
    """`meterfix replay` of an item once taken over from a dead worker kept the "taken over"
    text in `last_error`: the dashboard still said its previous attempt's worker had stopped
    without finishing, and its next claim was read as a take-over (the mark that dead-letters
    an item past a lowered limit unrun)."""
    orphan = _orphan(intake.engine, "was_orphan", attempts=1)
    assert intake.worker(task_runner=lambda _k, _r: "remediated").drain().done == [orphan]
    [row] = _rows(intake)
    assert (row.status, row.attempts) == (InboxStatus.DONE, 2)
    result = intake.app.test_cli_runner().invoke(args=["replay", orphan])
    assert result.exit_code == 0 and f"{orphan} re-queued" in result.output
    [row] = _rows(intake)
    assert (row.status, row.attempts, row.last_error) == (InboxStatus.PENDING, 0, None)
    claimed = claim_next(intake.engine, "worker-2", timedelta(seconds=30))
    assert claimed is not None and (claimed.event_id, claimed.attempts) == (orphan, 1)
    assert not claimed.taken_over


def test_a_pending_claim_never_reads_a_stale_take_over_mark(intake: Intake) -> None:
    """A row left pending with the "taken over" text (written before this fix, or by any path
    that kept it) was claimed as taken over though its previous worker had let it go."""
    _orphan(intake.engine, "stale_mark", attempts=1)
    first = claim_next(intake.engine, "worker-1", timedelta(seconds=30))
    assert first is not None and first.taken_over  # a real take-over: the mark is right
    with Session(intake.engine) as session:  # handed back by an older release, mark kept
        row = session.exec(select(InboxEvent)).one()
        row.status, row.locked_by, row.locked_at = InboxStatus.PENDING, None, None
        session.add(row)
        session.commit()
    again = claim_next(intake.engine, "worker-2", timedelta(seconds=30))
    assert again is not None and not again.taken_over
    [row] = _rows(intake)
    assert (row.status, row.locked_by, row.last_error) == (InboxStatus.PROCESSING, "worker-2", None)


def test_a_run_asked_for_while_the_last_attempt_fails_is_not_dead_lettered(
    intake: Intake,
) -> None:
    """A new failed-records file for an import set (a requeue) came while its task was on its
    last attempt, and that attempt failed: the row was dead-lettered and the run asked for
    (the new file's rows) waited for an operator's replay. The request gives the item a fresh
    set of attempts: it runs again rather than being dead-lettered."""
    with intake.engine.begin() as connection:
        enqueue_task(connection, TaskKind.POLLER_ROWS, "last")
    last = task_id(TaskKind.POLLER_ROWS, "last")
    entered, release, runs = threading.Event(), threading.Event(), []

    def runner(_kind: TaskKind, ref: str) -> str:
        runs.append(ref)
        if len(runs) == 1:  # the last attempt: asked for again while it runs, then it fails
            entered.set()
            release.wait(20)
            raise RuntimeError("S3 down")
        return "remediated"

    settings = intake.settings.model_copy(update={"mfx_max_attempts": 1})
    first = InboxWorker(intake.engine, settings, task_runner=runner)
    thread = threading.Thread(target=first.drain)
    thread.start()
    try:
        assert entered.wait(20), "the worker never started the task"
        assert requeue(intake.engine, last)
    finally:
        release.set()
        thread.join(20)
    InboxWorker(intake.engine, settings, task_runner=runner).drain()
    [row] = _rows(intake)
    assert (row.status, row.outcome, runs) == (InboxStatus.DONE, "remediated", ["last"] * 2), (
        row.last_error
    )
