"""Handing the poller's failed rows to remediation: the hook called per import set with
failed rows, and the queue of remediation tasks for import sets still `pending`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from service.jobs.store.reports import pending_poller_import_sets
from service.logs import log_event
from service.models import ImportSet
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
