"""Retention: records older than MFX_RETENTION_DAYS are purged in bounded batches (one short
transaction each, each store deleting its own rows); bucket objects are never deleted.

Purged: processed inbox events (done, ignored, dead; pending work never), the correction
audit and quarantined rows of runs that finished before the cutoff (the runs themselves stay,
with their counts and outputs: lineage), resolved alerts, digest records. (Heartbeats of
instances gone since before the cutoff are purged by their owner, the worker's silence watch.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine

from service.intake.store import purge_finished_events
from service.jobs.store.quarantine import purge_quarantined
from service.jobs.store.runs import purge_audit
from service.logs import log_event
from service.models._types import utcnow
from service.notify.store import purge_digest_runs, purge_resolved_alerts

BATCH = 1000
MAX_BATCHES_PER_TABLE = 200  # one pass stays short; the next pass goes on
PurgeBatch = Callable[[Engine, datetime, int], int]  # (engine, cutoff, batch) -> rows deleted


def purge_expired(
    engine: Engine,
    retention_days: int,
    *,
    now: datetime | None = None,
    stop: threading.Event | None = None,
    batch: int = BATCH,
) -> dict[str, int]:
    """Delete what is older than the cutoff; returns rows deleted per table."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    plan: list[tuple[str, PurgeBatch]] = [
        ("inbox_events", purge_finished_events),
        ("correction_audit", purge_audit),
        ("quarantined_rows", purge_quarantined),
        ("alerts", purge_resolved_alerts),
        ("digest_runs", purge_digest_runs),
    ]
    deleted = {
        table: _purge(engine, cutoff, purge, batch, stop or threading.Event())
        for table, purge in plan
    }
    log_event("retention.purged", cutoff=cutoff, **deleted)
    return deleted


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
