"""Retention: records older than MFX_RETENTION_DAYS are purged in bounded batches (one short
transaction each); bucket objects are never deleted.

Purged: processed inbox events (done, ignored, dead; pending work never), the correction
audit and quarantined rows of runs that finished before the cutoff (the runs themselves stay,
with their counts and outputs: lineage), resolved alerts, digest records, and heartbeats of
instances gone since before the cutoff.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, delete, select

from service.logs import log_event
from service.models import CorrectionAudit, QuarantinedRow, RemediationRun
from service.models._types import table_of, utcnow
from service.models.alerts import Alert, AlertStatus, DigestRun
from service.models.health import Heartbeat
from service.models.inbox import InboxEvent, InboxStatus

BATCH = 1000
MAX_BATCHES_PER_TABLE = 200  # one pass stays short; the next pass goes on


def _table(model: Any) -> Table:
    return table_of(model)


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
    inbox, audit, quarantine = _table(InboxEvent), _table(CorrectionAudit), _table(QuarantinedRow)
    runs, alerts = _table(RemediationRun), _table(Alert)
    digests, beats = _table(DigestRun), _table(Heartbeat)
    old_runs = select(runs.c.id).where(runs.c.finished_at < cutoff)
    plan: list[tuple[Table, Any]] = [
        (
            inbox,
            (inbox.c.received_at < cutoff)
            & inbox.c.status.in_([InboxStatus.DONE, InboxStatus.IGNORED, InboxStatus.DEAD]),
        ),
        (audit, audit.c.run_id.in_(old_runs)),
        (quarantine, quarantine.c.run_id.in_(old_runs) | (quarantine.c.created_at < cutoff)),
        (alerts, (alerts.c.status == AlertStatus.RESOLVED) & (alerts.c.resolved_at < cutoff)),
        (digests, digests.c.window_end < cutoff),
        (beats, beats.c.last_beat_at < cutoff),
    ]
    deleted = {
        table.name: _purge(engine, table, where, batch, stop or threading.Event())
        for table, where in plan
    }
    log_event("retention.purged", cutoff=cutoff, **deleted)
    return deleted


def _purge(engine: Engine, table: Table, where: Any, batch: int, stop: threading.Event) -> int:
    total = 0
    for _ in range(MAX_BATCHES_PER_TABLE):
        if stop.is_set():
            break
        ids = select(table.c.id).where(where).limit(batch).scalar_subquery()
        with engine.begin() as conn:
            count = conn.execute(delete(table).where(table.c.id.in_(ids))).rowcount
        total += count
        if count < batch:
            break
    return total
