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

from service.jobs.store.reports import pending_poller_import_sets, unmatched_reports
from service.logs import log_event
from service.models import ErrorReportStatus, ImportSet
from service.poller.store import imported_rows_by_identifier
from service.worker.tasks import TaskKind, enqueue_task

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


# How long after it came an `unmatched` error report is matched again by each pass that
# recorded rows: Stripe's connector may take a version before the poller lists it (index
# mode), and a report is about rows taken up to a day before its window.
LATE_MATCH = timedelta(days=1)


def queue_late_reports(engine: Engine, now: datetime) -> int:
    """Link the samples of the `unmatched` reports of the last LATE_MATCH that name rows the
    poller has recorded since (Stripe's connector took the version, and reported its rows,
    before the poller indexed it) and queue their remediation; how many were queued. The
    report's task does the rest as for a report that matched when it came."""
    with Session(engine) as session:
        reports = unmatched_reports(session, now - LATE_MATCH)
        identifiers = {str(s.identifier) for _, samples in reports for s in samples}
        known = imported_rows_by_identifier(session, identifiers)
        queued = []
        for report, samples in reports:
            linked = [s for s in samples if str(s.identifier) in known]
            for sample in linked:
                row = known[str(sample.identifier)]
                sample.object_key, sample.row_number = row.object_key, row.row_number
                session.add(sample)
            if linked:
                report.status = ErrorReportStatus.RECORDED
                session.add(report)
                enqueue_task(session.connection(), TaskKind.ERROR_REPORT, report.event_id)
                queued.append(report.event_id)
        session.commit()
    if queued:
        log_event("poller.reports_matched", reports=len(queued), event_ids=queued[:20])
    return len(queued)


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
