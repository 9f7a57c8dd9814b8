"""Database engine construction and sessions (SQLite in WAL mode, or PostgreSQL). Beside
them, what the stores share, one module each: keyset pages (`pages.py`), the statements
written once for both dialects (`statements.py`: insert-or-ignore, IN over one parameter,
batched deletes), bulk loading and PostgreSQL's COPY (`bulk.py`), locks across processes
(`locks.py`) and the migrations (`migrate.py`). Those import this module; it imports none of
them, so the engine loads without pyarrow or Alembic."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlmodel import Session, create_engine

from remediation import jsonnumbers
from service.config import SQLiteSynchronous

# SQLite checkpoints the WAL into the database file after a commit that leaves the WAL longer
# than this many pages, on that commit's request path (fdatasync included). The worker
# checkpoints every pass (`checkpoint_wal`), so this larger limit (~16 MB) is only the safety
# net that bounds the WAL when no worker runs; SQLite's default is 1000 pages.
WAL_AUTOCHECKPOINT_PAGES = 4000

# What a COMMIT waits for (MFX_SQLITE_SYNCHRONOUS). `normal`: in WAL mode a commit is written
# to the WAL before it returns, so it survives any crash of the process or of the service
# (kill -9 included), but the last commits can be lost if the machine loses power or the OS
# crashes before its next write-back. `full`: the WAL is fsynced on every commit, which also
# covers power loss, at several times the cost of a commit (see the README's intake figures).
_PRAGMAS: weakref.WeakKeyDictionary[Engine, Callable[[object], None]] = (
    weakref.WeakKeyDictionary()
)  # each SQLite engine's connection set-up, reused for its webhook writer


def sqlite_pragmas(engine: Engine) -> Callable[[object], None]:
    """The connection set-up of a SQLite engine (for a connection made beside its pool)."""
    return _PRAGMAS.get(engine) or partial(_sqlite_pragmas, synchronous=SQLiteSynchronous.NORMAL)


def make_engine(url: str, *, synchronous: str = SQLiteSynchronous.NORMAL) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout, foreign keys and `synchronous`.
    JSON columns are read with `jsonnumbers.loads`: a quarantined row stored in full keeps its
    numbers as its file spelled them (`12345678901234567.25`, not the float nearest), and a
    re-run of it writes them so."""
    if url.startswith("sqlite"):
        if synchronous not in set(SQLiteSynchronous):
            levels = ", ".join(SQLiteSynchronous)
            raise ValueError(f"SQLite synchronous must be one of: {levels}")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            json_deserializer=jsonnumbers.loads,
        )
        pragmas = partial(_sqlite_pragmas, synchronous=synchronous)
        _PRAGMAS[engine] = pragmas
        event.listen(engine, "connect", pragmas)
        return engine
    # up to 16 connections: one for each of a web process's threads (the Procfile's gthread
    # workers), so a webhook never waits for a connection behind dashboard queries
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=11, json_deserializer=jsonnumbers.loads
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: object = None, *, synchronous: str) -> None:
    cursor = dbapi_connection.cursor()  # a DBAPI connection: untyped by PEP 249
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cursor.close()


def checkpoint_wal(engine: Engine) -> None:
    """Copy committed WAL pages into a SQLite database file without waiting for anyone
    (PASSIVE), so web requests rarely run the automatic checkpoint; no-op elsewhere."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def is_postgres(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
