"""The inbox table's life cycle: store a verified event, claim it, finish it, re-queue it.

Storing is one INSERT (SQLAlchemy Core, no ORM on the hot path); a unique violation on
`event_id` means another delivery of the same event got there first. Claiming is one
conditional UPDATE ... RETURNING whose subquery takes `FOR UPDATE SKIP LOCKED` on
PostgreSQL (several workers never take the same row); on SQLite the write lock serialises
it and the repeated WHERE makes it a compare-and-set. A live worker renews the lease of
the row it works on from its heartbeat; rows left `processing` longer than the lease (a
dead worker) become claimable again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, Table, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.adapters.stripe_events import VerifiedEvent
from service.errors import InboxUnavailable
from service.intake.pg_writer import postgres_writer
from service.intake.sqlite_writer import sqlite_writer
from service.models._types import utcnow
from service.models.inbox import InboxEvent, InboxStatus
from service.notify.alerts import raise_alert, resolve_alert

INBOX: Table = InboxEvent.__table__  # type: ignore[attr-defined]
_INSERT = insert(INBOX)  # a statement object only: nothing touches a database at import
_INSERT_COLUMNS = (
    "event_id",
    "event_type",
    "style",
    "livemode",
    "body",
    "received_at",
    "status",
    "attempts",
    "next_attempt_at",
)
_RAW_INSERT = {
    "sqlite": "INSERT INTO inbox_events ({}) VALUES ({})".format(
        ", ".join(_INSERT_COLUMNS), ", ".join("?" for _ in _INSERT_COLUMNS)
    ),
    "postgresql": "INSERT INTO inbox_events ({}) VALUES ({})".format(
        ", ".join(_INSERT_COLUMNS), ", ".join("%s" for _ in _INSERT_COLUMNS)
    ),
}
_SQLITE_DATETIME_CHARS = (
    26  # "YYYY-MM-DD HH:MM:SS.ffffff": how SQLAlchemy stores DATETIME in SQLite
)

FIRST_RETRY_SECONDS = 15.0  # jittered to 7.5-15 s: the first retry comes within 30 s
MAX_BACKOFF_SECONDS = 900.0  # 15 minutes
ERROR_TEXT_LIMIT = 2000


class StoreResult(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"  # stored, but no handler for its type


@dataclass(frozen=True)
class ClaimedEvent:
    row_id: int
    event_id: str
    event_type: str
    style: str
    body: str
    attempts: int


def store_event(engine: Engine, event: VerifiedEvent, *, known_type: bool) -> StoreResult:
    """Durably store a verified event (committed on return); duplicates store nothing."""
    dbapi = engine.dialect.loaded_dbapi
    try:
        _insert(engine, _inbox_row(engine, event, known_type))
    except (IntegrityError, dbapi.IntegrityError):  # repeated or concurrent delivery
        return StoreResult.DUPLICATE
    except (SQLAlchemyError, dbapi.Error) as exc:
        raise InboxUnavailable(type(exc).__name__) from exc
    return StoreResult.STORED if known_type else StoreResult.IGNORED


def _inbox_row(engine: Engine, event: VerifiedEvent, known_type: bool) -> tuple[Any, ...]:
    """The new row's values in `_INSERT_COLUMNS` order."""
    now = utcnow()
    stamp = sqlite_datetime(now) if engine.dialect.name == "sqlite" else now
    status = InboxStatus.PENDING if known_type else InboxStatus.IGNORED
    return (
        event.event_id,
        event.event_type,
        event.style.value,
        event.livemode,
        event.body,
        stamp,  # received_at
        status.value,
        0,  # attempts
        stamp if known_type else None,  # next_attempt_at: due now, or never
    )


def sqlite_datetime(value: datetime) -> str:
    """A UTC datetime as SQLAlchemy writes it to SQLite (isoformat is ~3x cheaper than
    strftime and always has the microseconds with timespec; the "+00:00" is cut off)."""
    return value.isoformat(" ", "microseconds")[:_SQLITE_DATETIME_CHARS]


def _insert(engine: Engine, row: tuple[Any, ...]) -> None:
    """One INSERT and COMMIT. The web hot path skips SQLAlchemy's statement machinery
    (about half the request's cost) and runs a fixed statement, which the DBAPI driver
    prepares once and caches, on the process's own writer connection (one registry,
    `service.intake.writers`): for SQLite files `service.intake.sqlite_writer.SQLiteWriter`, for
    PostgreSQL `service.intake.pg_writer.PostgresWriter` (autocommit: one round trip); an
    in-memory SQLite database uses a pooled DBAPI connection."""
    raw_insert = _RAW_INSERT.get(engine.dialect.name)
    if raw_insert is None:
        with engine.begin() as connection:
            connection.execute(_INSERT, dict(zip(_INSERT_COLUMNS, row, strict=True)))
        return
    writer = sqlite_writer(engine) or postgres_writer(engine)
    if writer is not None:
        writer.commit_one(raw_insert, row)
        return
    raw = engine.raw_connection()
    try:
        raw.cursor().execute(raw_insert, row)
        raw.commit()
    except BaseException:
        raw.rollback()
        raise
    finally:
        raw.close()


def _claimable(now: datetime, lease: timedelta) -> Any:
    due = and_(
        INBOX.c.status == InboxStatus.PENDING,
        or_(INBOX.c.next_attempt_at.is_(None), INBOX.c.next_attempt_at <= now),
    )
    stale = and_(INBOX.c.status == InboxStatus.PROCESSING, INBOX.c.locked_at < now - lease)
    return or_(due, stale)


def claim_next(engine: Engine, worker_id: str, lease: timedelta) -> ClaimedEvent | None:
    """Take the oldest due row (or one whose worker died), or None when nothing is due."""
    now = utcnow()
    candidate = (
        select(INBOX.c.id)
        .where(_claimable(now, lease))
        .order_by(INBOX.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    statement = (
        update(INBOX)
        .where(INBOX.c.id == candidate, _claimable(now, lease))
        .values(
            status=InboxStatus.PROCESSING,
            locked_by=worker_id,
            locked_at=now,
            attempts=INBOX.c.attempts + 1,
        )
        .returning(
            INBOX.c.id,
            INBOX.c.event_id,
            INBOX.c.event_type,
            INBOX.c.style,
            INBOX.c.body,
            INBOX.c.attempts,
        )
    )
    with engine.begin() as connection:
        row = connection.execute(statement).first()
    if row is None:
        return None
    return ClaimedEvent(row[0], row[1], row[2], row[3], row[4], row[5])


def mark_done(
    connection: Connection, claimed: ClaimedEvent, worker_id: str, outcome: str, status: str
) -> bool:
    """Finish a claimed row inside the caller's transaction; False if the lease was lost.

    A success also resolves the row's dead-letter alert (a replayed or retried item that now
    works), in the same transaction."""
    result = connection.execute(
        update(INBOX)
        .where(_owned(claimed, worker_id))
        .values(
            status=status,
            outcome=outcome[:ERROR_TEXT_LIMIT],
            processed_at=utcnow(),
            locked_by=None,
            locked_at=None,
            next_attempt_at=None,
        )
    )
    if result.rowcount != 1:
        return False
    resolve_alert(connection, dead_letter_key(claimed.event_id))
    return True


def renew_lease(engine: Engine, claimed: ClaimedEvent, worker_id: str) -> bool:
    """Move the lease of a row we still hold forward (the heartbeat calls this while the
    item is worked on); False when the row is no longer ours."""
    with engine.begin() as connection:
        result = connection.execute(
            update(INBOX).where(_owned(claimed, worker_id)).values(locked_at=utcnow())
        )
    return result.rowcount == 1


def release_claim(engine: Engine, claimed: ClaimedEvent, worker_id: str) -> bool:
    """Give a row we hold back, due now, without counting the attempt (the worker was asked
    to stop mid-item: the next worker takes it at once instead of after the lease)."""
    with engine.begin() as connection:
        result = connection.execute(
            update(INBOX)
            .where(_owned(claimed, worker_id))
            .values(
                status=InboxStatus.PENDING,
                attempts=INBOX.c.attempts - 1,
                next_attempt_at=utcnow(),
                locked_by=None,
                locked_at=None,
            )
        )
    return result.rowcount == 1


def mark_failed(
    connection: Connection, claimed: ClaimedEvent, worker_id: str, error: str, dead: bool
) -> tuple[bool, datetime | None]:
    """Schedule a retry or dead-letter the row, keeping the error either way. Returns whether
    the row was still ours (False: another worker took it over) and when it is due again."""
    next_at = None if dead else utcnow() + timedelta(seconds=backoff_seconds(claimed.attempts))
    result = connection.execute(
        update(INBOX)
        .where(_owned(claimed, worker_id))
        .values(
            status=InboxStatus.DEAD if dead else InboxStatus.PENDING,
            last_error=error[:ERROR_TEXT_LIMIT],
            next_attempt_at=next_at,
            locked_by=None,
            locked_at=None,
        )
    )
    return result.rowcount == 1, next_at


def _owned(claimed: ClaimedEvent, worker_id: str) -> Any:
    return and_(
        INBOX.c.id == claimed.row_id,
        INBOX.c.status == InboxStatus.PROCESSING,
        INBOX.c.locked_by == worker_id,
    )


def backoff_seconds(attempts: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: 7.5-15 s after the first failure, capped at 15 min."""
    ceiling = min(MAX_BACKOFF_SECONDS, FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0))
    return float(ceiling * (rng or random).uniform(0.5, 1.0))


def requeue(engine: Engine, event_id: str) -> bool:
    """Make a stored event pending again, whatever its state; False if it is unknown."""
    with engine.begin() as connection:
        result = connection.execute(
            update(INBOX)
            .where(INBOX.c.event_id == event_id)
            .values(
                status=InboxStatus.PENDING,
                attempts=0,
                next_attempt_at=utcnow(),
                locked_by=None,
                locked_at=None,
            )
        )
    return result.rowcount == 1


def dead_letter_alert(
    connection: Connection, claimed: ClaimedEvent, error: str, *, permanent: bool = False
) -> None:
    """One alert per dead event (deterministic key); a replayed event that dies again counts
    again on the same alert (reopening it if it was resolved). `permanent`: dead-lettered at
    once, because retrying cannot help (the event's data is unusable, the input is gone)."""
    why = "not retried" if permanent else f"gave up after {claimed.attempts} attempts"
    raise_alert(
        connection,
        key=dead_letter_key(claimed.event_id),
        severity="critical",
        kind="inbox.dead_letter",
        subject=f"Stripe event {claimed.event_id} ({claimed.event_type}) dead-lettered",
        message=f"{why}: {error[:ERROR_TEXT_LIMIT]}",
        detail={"event_id": claimed.event_id, "event_type": claimed.event_type},
        links={"event": claimed.event_id},
    )


def dead_letter_key(event_id: str) -> str:
    """The alert key of a dead-lettered event; a later success of the event resolves it."""
    return f"inbox.dead:{event_id}"
