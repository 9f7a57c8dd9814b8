"""The inbox's store: storing a verified event (the webhook's one INSERT, committed on
return), and what the dashboard, the API, the digests, /metrics and retention read or purge.

The INSERT is raw SQL on this measured hot path (`_insert`); a unique violation on `event_id`
means another delivery of the same event got there first. The worker takes it from there
(`service.worker.inbox_claims`: claiming, leases, retries, dead letters).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, func, insert, literal_column, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.adapters.stripe_events import VerifiedEvent
from service.db.pages import MAX_ROW_ID, Listing, Page, keyset
from service.db.statements import delete_batch
from service.errors import InboxUnavailable
from service.intake.pg_writer import postgres_writer
from service.intake.sqlite_writer import sqlite_writer
from service.models._types import as_utc, table_of, utcnow
from service.models.inbox import InboxEvent, InboxStatus

INBOX = table_of(InboxEvent)
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


class StoreResult(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"  # stored, but no handler for its type


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


# --- what the dashboard, the API, the digests and /metrics read ----------------------------

EVENT_COLUMNS = (
    INBOX.c.id,
    INBOX.c.event_id,
    INBOX.c.event_type,
    INBOX.c.style,
    INBOX.c.livemode,
    INBOX.c.status,
    INBOX.c.attempts,
    INBOX.c.last_error,
    INBOX.c.outcome,
    INBOX.c.received_at,
    INBOX.c.next_attempt_at,
    INBOX.c.processed_at,
)  # every column but the body
RARE_STATUS_ROWS = 2000  # fewer events than this in a status: read them from its index


def list_events(connection: Connection, page: Page, status: InboxStatus | None = None) -> Listing:
    query = select(*EVENT_COLUMNS)
    if status is not None:
        query = query.where(_status_is(connection, status))
    return keyset(connection, query, INBOX.c.id, page)


def _status_is(connection: Connection, status: InboxStatus) -> ColumnElement[bool]:
    """`status = ?`, marked unlikely for SQLite when the status is rare.

    Most events are done; dead letters and pending items are few. SQLite's statistics hold
    only the average number of rows per status, so for `status = 'dead' ORDER BY id DESC` it
    walks the whole inbox backwards (bodies included) to find a few rows: 120 ms for 20,000
    events. When a count bounded on the status index finds fewer than RARE_STATUS_ROWS,
    `likelihood()` says so, and SQLite reads them from that index and sorts them instead.
    PostgreSQL keeps statistics per value and needs no hint."""
    condition = INBOX.c.status == status.value
    if connection.dialect.name != "sqlite":
        return condition
    some = select(INBOX.c.id).where(condition).limit(RARE_STATUS_ROWS).subquery()
    if connection.execute(select(func.count()).select_from(some)).scalar_one() >= RARE_STATUS_ROWS:
        return condition
    # The probability must be a constant in the SQL text (a bound parameter is refused), and
    # the call must stand alone: typed Boolean, SQLAlchemy would compare it to 1, hiding it.
    return func.likelihood(condition, literal_column("0.001"))


def find_event(connection: Connection, ref: str) -> dict[str, Any] | None:
    """An inbox event by its event id (`evt_…`, `mfx_task_…`), or by its row id."""
    if "\x00" in ref:  # no event id holds one (PostgreSQL's text cannot: the query fails)
        return None
    row = connection.execute(select(*EVENT_COLUMNS).where(INBOX.c.event_id == ref)).first()
    if row is None and ref.isascii() and ref.isdigit() and len(ref) < 18:
        if int(ref) > MAX_ROW_ID:
            return None
        row = connection.execute(select(*EVENT_COLUMNS).where(INBOX.c.id == int(ref))).first()
    return None if row is None else dict(row._mapping)


def latest_events(connection: Connection, status: InboxStatus, limit: int) -> list[dict[str, Any]]:
    """The newest events in `status`."""
    rows = connection.execute(
        select(*EVENT_COLUMNS)
        .where(INBOX.c.status == status.value)
        .order_by(INBOX.c.id.desc())
        .limit(limit)
    ).all()
    return [dict(row._mapping) for row in rows]


def count_events(connection: Connection, status: InboxStatus) -> int:
    query = select(func.count()).select_from(INBOX).where(INBOX.c.status == status.value)
    return int(connection.execute(query).scalar_one())


def events_by_status(connection: Connection) -> list[tuple[str, int]]:
    """(status, events) for every status some event has."""
    query = select(INBOX.c.status, func.count().label("events")).group_by(INBOX.c.status)
    return [(str(row.status), int(row.events)) for row in connection.execute(query)]


def oldest_pending(connection: Connection) -> datetime | None:
    """When the oldest pending event was received (None: nothing pending)."""
    query = select(func.min(INBOX.c.received_at)).where(INBOX.c.status == InboxStatus.PENDING)
    return as_utc(connection.execute(query).scalar())


def purge_finished_events(engine: Engine, before: datetime, batch: int) -> int:
    """Retention: delete up to `batch` events received before `before` and processed (done
    or ignored). Never work not done: pending, nor dead letters, which an operator replays
    (`meterfix replay`): the event is the one copy of what Stripe said, or of the task."""
    finished = [InboxStatus.DONE, InboxStatus.IGNORED]
    where = (INBOX.c.received_at < before) & INBOX.c.status.in_(finished)
    return delete_batch(engine, INBOX, where, batch)


# What is not finished: still to run, or dead-lettered (`meterfix replay` runs it again)
UNFINISHED = (InboxStatus.PENDING, InboxStatus.PROCESSING, InboxStatus.DEAD)


def any_unfinished(connection: Connection, event_type: str) -> bool:
    """Whether an event or task of `event_type` is pending, being worked on, or dead-lettered
    (retention holds back what such a task still has to read), in the caller's transaction."""
    query = select(INBOX.c.id).where(
        INBOX.c.event_type == event_type, INBOX.c.status.in_(UNFINISHED)
    )
    return connection.execute(query.limit(1)).first() is not None


def unfinished(connection: Connection) -> tuple[dict[str, int], datetime | None]:
    """Events not finished yet (pending, processing): how many per status, and when the
    oldest of them was received (the health snapshot's backlog)."""
    statuses = (InboxStatus.PENDING.value, InboxStatus.PROCESSING.value)
    rows = connection.execute(
        select(INBOX.c.status, func.count().label("events"))
        .where(INBOX.c.status.in_(statuses))
        .group_by(INBOX.c.status)
    )
    counts = {str(row.status): int(row.events) for row in rows}
    query = select(func.min(INBOX.c.received_at)).where(INBOX.c.status.in_(statuses))
    return counts, as_utc(connection.execute(query).scalar())
