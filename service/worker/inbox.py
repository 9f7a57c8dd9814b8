"""The inbox table's life cycle after intake stored an event (`service.intake.store`): claim
it, finish it, re-queue it. Claiming is one conditional UPDATE ... RETURNING whose subquery
takes `FOR UPDATE SKIP LOCKED` on PostgreSQL (several workers never take the same row); on
SQLite the write lock serialises it and the repeated WHERE makes it a compare-and-set. A live
worker renews the lease of the row it works on from its heartbeat; rows left `processing`
longer than the lease (a dead worker) become claimable again.

A `processing` row's `next_attempt_at` is NULL (the claim clears it) unless `requeue` was
asked while a worker ran it: it is then due again once that run is done (`mark_done`), never
run beside it. Its `last_error` is `TAKEN_OVER` only from a take-over until the row is made
pending again (handed back, re-queued, replayed) or fails.

This module re-queues and replays (other rooms call it); claiming, leases, finishing and
dead letters are in `service.worker.inbox_claims`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, and_, case, or_, select, update

from service.intake.store import INBOX
from service.logs import log_event
from service.models._types import utcnow
from service.models.inbox import InboxStatus

TAKEN_OVER = "its previous attempt's worker stopped without finishing (its lease expired)"


def requeue(engine: Engine, event_id: str) -> bool:
    """Have a stored event run again (`requeue_event`); False if it is unknown."""
    with engine.begin() as connection:
        return requeue_event(connection, event_id)


@dataclass(frozen=True)
class ReplayOutcome:
    found: bool
    held_by: str | None = None  # the live worker holding the row: it was not re-queued


def replay(engine: Engine, event_id: str, lease: timedelta) -> ReplayOutcome:
    """`meterfix replay`: make a stored event pending again, unless a live worker holds it
    (re-queued, a second worker would run it beside the first). A row whose lease expired
    (`inbox_claims._claimable`: its worker died) is re-queued."""
    with engine.begin() as connection:
        return replay_in(connection, INBOX.c.event_id == event_id, lease)


def replay_in(
    connection: Connection, which: ColumnElement[bool], lease: timedelta
) -> ReplayOutcome:
    """`replay` in the caller's transaction (a replay by an admin records itself in it)."""
    free = or_(
        INBOX.c.status != InboxStatus.PROCESSING,
        INBOX.c.locked_at.is_(None),
        INBOX.c.locked_at < utcnow() - lease,
    )
    if _requeue(connection, and_(which, free)):
        return ReplayOutcome(found=True)
    row = connection.execute(select(INBOX.c.locked_by).where(which)).first()
    if row is None:
        return ReplayOutcome(found=False)
    return ReplayOutcome(found=True, held_by=row.locked_by or "unknown")


def requeue_event(connection: Connection, event_id: str) -> bool:
    """Have a stored event run again, in the caller's transaction (a handler's or the
    poller's records commit with it); False if it is unknown. Pending again at once with its
    attempts reset, unless a worker is running it: it is then run again once that run is done
    (`mark_done`), never beside it (a dead worker's row is taken over within its lease)."""
    return _requeue_or_defer(connection, INBOX.c.event_id == event_id)


def requeue_row(connection: Connection, row_id: int) -> bool:
    """`requeue_event` by row id."""
    return _requeue_or_defer(connection, INBOX.c.id == row_id)


def _requeue_or_defer(connection: Connection, which: ColumnElement[bool]) -> bool:
    # One statement: the row's state is read under its lock (a worker finishing it meanwhile
    # waits, then sees the request), and a due row stays locked, so unclaimable, until the
    # caller's records are committed
    running = INBOX.c.status == InboxStatus.PROCESSING
    row = connection.execute(
        update(INBOX)
        .where(which)
        .values(
            status=case((running, INBOX.c.status), else_=InboxStatus.PENDING.value),
            attempts=case((running, INBOX.c.attempts), else_=0),
            next_attempt_at=utcnow(),
            locked_by=case((running, INBOX.c.locked_by), else_=None),
            locked_at=case((running, INBOX.c.locked_at), else_=None),
            last_error=case((running, INBOX.c.last_error), else_=take_over_ended()),
        )
        .returning(INBOX.c.event_id, INBOX.c.status, INBOX.c.locked_by)
    ).first()
    if row is not None and row.status == InboxStatus.PROCESSING:
        log_event("inbox.requeue_deferred", event_id=row.event_id, held_by=row.locked_by)
    return row is not None


def _requeue(connection: Connection, which: ColumnElement[bool]) -> bool:
    result = connection.execute(
        update(INBOX)
        .where(which)
        .values(
            status=InboxStatus.PENDING,
            attempts=0,
            next_attempt_at=utcnow(),
            locked_by=None,
            locked_at=None,
            last_error=take_over_ended(),
        )
    )
    return result.rowcount == 1


def take_over_ended() -> ColumnElement[Any]:
    """`last_error` without the take-over mark (`TAKEN_OVER`): the take-over is over."""
    return case((INBOX.c.last_error == TAKEN_OVER, None), else_=INBOX.c.last_error)
