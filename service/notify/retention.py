"""Retention: records older than MFX_RETENTION_DAYS are purged in bounded batches (one short
transaction each, each store deleting its own rows); bucket objects are never deleted.

Purged: processed inbox events (done, ignored; pending work and dead letters never), the
correction audit and quarantined rows of runs that finished before the cutoff (the runs
themselves stay, with their counts and outputs: lineage), error reports nothing needs any
more (`purge_reports`), resolved alerts, digest records. (Heartbeats of instances gone since
before the cutoff are purged by their owner, the worker's silence watch.)
While a quarantine re-run is queued, running or dead-lettered (replayable), the audit and the
quarantined rows wait for a later pass: the re-run reads the rows its operator counted, and
traces their lineage in the audit, when it runs (`service.jobs.quarantine_rerun`); each batch
checks and deletes under the lock queueing a re-run takes (`lock_rerun_inputs`). Quarantined
rows and error reports are kept at least as long as Stripe takes usage (`STRIPE_TAKES`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import Connection, Engine

from remediation.validation import MAX_PAST_SECONDS
from service.intake.store import any_unfinished, purge_finished_events
from service.jobs.store.quarantine import purge_quarantined
from service.jobs.store.report_records import purge_reports
from service.jobs.store.rerun_queue import lock_rerun_inputs
from service.jobs.store.runs import purge_audit
from service.logs import log_event
from service.models._types import utcnow
from service.notify.digest_store import purge_digest_runs
from service.notify.store import purge_resolved_alerts

BATCH = 1000
MAX_BATCHES_PER_TABLE = 200  # one pass stays short; the next pass goes on
PurgeBatch = Callable[[Engine, datetime, int], int]  # (engine, cutoff, batch) -> rows deleted
InputsBatch = Callable[[Connection, datetime, int], int]  # the same, in the caller's transaction
# The task type of a quarantine re-run, and the id of an error report's task less its event
# id (`service.worker.tasks`, which notify does not import)
RERUN_TASK = "meterfix.remediate.quarantine_rerun"
REPORT_TASK_PREFIX = "mfx_task_error_report_"
# Quarantined rows stay at least as long as Stripe takes usage (35 days back), whatever
# MFX_RETENTION_DAYS: until then a held row is still billable (a re-run, or its file fixed by
# hand, sends it), and its entry is how the poller knows Stripe refused a row it had sent
# (`refused_among`); purged, the row fixed by hand was left out as billed: usage lost.
# Error reports too: Stripe redelivers an event while it keeps it (30 days), and the report
# is how the worker knows it recorded one (`record_error_report`) once the inbox forgot it.
STRIPE_TAKES = timedelta(seconds=MAX_PAST_SECONDS)


def purge_expired(
    engine: Engine,
    retention_days: int,
    *,
    now: datetime | None = None,
    stop: threading.Event | None = None,
    batch: int = BATCH,
) -> dict[str, int]:
    """Delete what is older than the cutoff; returns rows deleted per table."""
    moment = now or utcnow()
    cutoff = moment - timedelta(days=retention_days)
    held_cutoff = min(cutoff, moment - STRIPE_TAKES)
    plan: list[tuple[str, PurgeBatch, datetime]] = [
        ("inbox_events", purge_finished_events, cutoff),
        # the audit at least as long too: it is how a corrected row Stripe refuses again with
        # the same code is known (loop protection); purged after a day, `s1-mfx1` refused
        # again was corrected again as `s1-mfx2`
        ("correction_audit", _held_for_rerun(purge_audit), held_cutoff),
        ("quarantined_rows", _held_for_rerun(purge_quarantined), held_cutoff),
        # after the rows of their runs, which keep them
        ("error_reports", partial(purge_reports, task_prefix=REPORT_TASK_PREFIX), held_cutoff),
        ("alerts", purge_resolved_alerts, cutoff),
        ("digest_runs", purge_digest_runs, cutoff),
    ]
    stop = stop or threading.Event()
    deleted = {table: _purge(engine, before, purge, batch, stop) for table, purge, before in plan}
    log_event("retention.purged", cutoff=cutoff, quarantine_cutoff=held_cutoff, **deleted)
    return deleted


def _held_for_rerun(purge: InputsBatch) -> PurgeBatch:
    """`purge`, but nothing while a quarantine re-run is queued, running or dead-lettered: it
    reads the rows its operator counted (and their lineage in the audit) when it runs, and
    rows purged before then were never re-run, their usage lost (a pass after it ends purges
    them). Asked again each batch, in the batch's transaction and under the lock queueing a
    re-run takes: a re-run queued during a pass stops it, and none is queued between the
    check and the delete."""

    def purge_unless_waited_for(engine: Engine, cutoff: datetime, batch: int) -> int:
        with engine.begin() as connection:
            lock_rerun_inputs(connection, shared=False)
            if any_unfinished(connection, RERUN_TASK):
                return 0
            return purge(connection, cutoff, batch)

    return purge_unless_waited_for


def _purge(
    engine: Engine, cutoff: datetime, purge: PurgeBatch, batch: int, stop: threading.Event
) -> int:
    total = 0
    for _ in range(MAX_BATCHES_PER_TABLE):
        if stop.is_set():
            break
        count = purge(engine, cutoff, batch)
        total += count
        if count < batch:
            break
    return total
