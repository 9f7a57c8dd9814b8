"""Storing a verified event in the inbox: the webhook's one INSERT, committed on return.

The INSERT is raw SQL on this measured hot path (`_insert`); a unique violation on `event_id`
means another delivery of the same event got there first. The worker takes it from there
(`service.worker.inbox`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.adapters.stripe_events import VerifiedEvent
from service.errors import InboxUnavailable
from service.intake.pg_writer import postgres_writer
from service.intake.sqlite_writer import sqlite_writer
from service.models._types import table_of, utcnow
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
