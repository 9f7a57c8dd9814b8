"""Handing the poller's failed rows to remediation: the hook called per import set with
failed rows, the queue of remediation tasks for import sets still `pending`, and the error
reports that came before the poller recorded their rows."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from service.jobs.store.report_records import (
    any_unmatched_like,
    mark_report,
    reports_overwritten,
    unmatched_alert_key,
    unmatched_reports,
)
from service.jobs.store.reports import pending_poller_import_sets
from service.logs import log_event
from service.models import ErrorReportStatus, ImportedRow, ImportSet
from service.models._types import as_utc
from service.notify.alerts import resolve_alert
from service.poller.store import imported_rows_by_identifier, recordable, taken_by
from service.worker.inbox import requeue_event
from service.worker.tasks import TaskKind, enqueue_task, task_id

FailedRowsHook = Callable[[ImportSet, Path], None]


def log_failed_rows(import_set: ImportSet, failed_records_path: Path) -> None:
    """The default hook: say where the failed rows are (`remediation_hook` queues a task)."""
    log_event(
        "poller.failed_rows",
        import_set=import_set.import_set_id,
        rows=import_set.errors_row_count,
        path=str(failed_records_path),
    )


def remediation_hook(engine: Engine) -> FailedRowsHook:
    """The hook the worker and `meterfix poll` wire: queue remediation for the import set."""
    return lambda _import_set, _path: _queue(engine)


def _queue(engine: Engine) -> None:
    queue_pending_remediation(engine)


def queue_pending_remediation(engine: Engine) -> int:
    """Queue a remediation task for every poller import set still `pending` (idempotent:
    an existing task is left alone), so rows a crash left behind are picked up too: its
    failed rows, or, when the whole file failed, the file (repaired as a file Stripe's
    importer failed)."""
    with engine.begin() as connection:
        pending = pending_poller_import_sets(connection)
        return sum(
            enqueue_task(
                connection, TaskKind.IMPORT_SET_FAILED if failed else TaskKind.POLLER_ROWS, ref
            )
            for ref, failed in pending
        )


# How long after it came an error report is taken up again by a pass that recorded its rows
# or its object: Stripe's connector may take a version before the poller lists it (index
# mode), and a report is about rows taken up to a day before its window.
LATE_MATCH = timedelta(days=1)
LOOKUP_SIZE = 1000  # sample identifiers looked up in one query


def queue_late_reports(engine: Engine, now: datetime, keys: set[str]) -> int:
    """Take up again the reports of the last LATE_MATCH that came before the poller recorded
    what they are about (Stripe's connector took a version, and reported its rows, before the
    poller listed it); how many. An `unmatched` report whose samples name rows recorded since
    has them linked and its remediation queued; a `partial` one that found one of `keys` (the
    objects this pass recorded) overwritten by a version not recorded then has its task run
    again (the runs it finished are counted, not run again)."""
    again = _reports_overwritten(engine, now, keys) if keys else []
    # Only a row Stripe could have taken before the report's window ended is one it is
    # about (`store.taken_by`).
    with Session(engine) as session:
        reports = unmatched_reports(session, now - LATE_MATCH)
        identifiers = sorted({str(s.identifier) for _, samples in reports for s in samples} - {""})
        known: dict[str, ImportedRow] = {}
        for start in range(0, len(identifiers), LOOKUP_SIZE):  # a few samples a report
            chunk = {i for i in identifiers[start : start + LOOKUP_SIZE] if recordable(i)}
            known |= imported_rows_by_identifier(session, chunk)
        queued = []
        for report, samples in reports:
            end = as_utc(report.validation_end) or as_utc(report.created_at) or now
            taken = taken_by(session, known, end)
            linked = [s for s in samples if str(s.identifier) in taken]
            for sample in linked:
                row = known[str(sample.identifier)]
                sample.object_key, sample.row_number = row.object_key, row.row_number
                session.add(sample)
            if linked:
                mark_report(report, ErrorReportStatus.RECORDED)
                session.add(report)
                enqueue_task(session.connection(), TaskKind.ERROR_REPORT, report.event_id)
                queued.append(report.event_id)
        session.commit()
        # the warning of the meter's unmatched reports, once none is left
        matched = {unmatched_alert_key(r): r for r, _ in reports if r.event_id in queued}
        for key, report in matched.items():
            if not any_unmatched_like(session, report):
                resolve_alert(engine, key)
    if queued:
        log_event("poller.reports_matched", reports=len(queued), event_ids=queued[:20])
    return len(queued) + len(again)


def _reports_overwritten(engine: Engine, now: datetime, keys: set[str]) -> list[str]:
    """Run again the task of each partial report that found one of `keys` overwritten by a
    version the poller had not recorded (it may hold the rows)."""
    with Session(engine) as session:
        found = []
        for report in reports_overwritten(session, now - LATE_MATCH, keys):
            # recorded (no longer waiting for a version), its task due: in one transaction
            requeue_event(session.connection(), task_id(TaskKind.ERROR_REPORT, report.event_id))
            mark_report(report, ErrorReportStatus.RECORDED)
            session.add(report)
            found.append(report.event_id)
        session.commit()
    if found:
        log_event("poller.reports_taken_up", reports=len(found), event_ids=found[:20])
    return found


def hand_over(hook: FailedRowsHook, import_set: ImportSet, path: Path) -> None:
    """The object is already marked imported; a failing hook leaves the import set `pending`
    (its row names the failed-records file) so remediation can pick it up later."""
    try:
        hook(import_set, path)
    except Exception as exc:  # loop edge: the hook belongs to remediation
        log_event(
            "poller.hook_failed",
            level=logging.ERROR,
            import_set=import_set.import_set_id,
            reason=f"{type(exc).__name__}: {exc}",
        )
