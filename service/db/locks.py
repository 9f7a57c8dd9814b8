"""One holder at a time across processes: advisory locks on PostgreSQL, a file lock beside
a SQLite file, and the lock held until a transaction ends. Apart from the engine: the poller,
the notify leader, quarantine re-runs and the migrations take them."""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from service.db import is_postgres

# Advisory locks are shared by the whole PostgreSQL cluster: the id is derived from the lock's
# seed and name and from the database and schema, so two meterfix installations (or test runs)
# in different databases or schemas of one server never hold each other's locks.
_LOCK_ID = text(
    "SELECT hashtextextended(current_database() || '.' || current_schema() || :name, :seed)"
)


@contextmanager
def advisory_lock(engine: Engine, seed: int, name: str = "", *, wait: bool) -> Iterator[bool]:
    """One holder at a time across processes: on PostgreSQL a session advisory lock held on a
    connection of its own while the block runs (let go with the connection if the process
    dies). `wait`: wait for it (yields True); else try once and yield whether it was taken.
    On a SQLite file, a file lock beside it (`meterfix poll` beside `meterfix worker` are two
    processes on one file; let go by the system if the process dies too); an in-memory
    database has one process."""
    if not is_postgres(engine):
        path = _sqlite_lock_path(engine, seed, name)
        if path is None:
            yield True
            return
        with _file_lock(path, wait=wait) as held:
            yield held
        return
    with engine.connect() as connection:
        key = {"key": int(connection.execute(_LOCK_ID, {"seed": seed, "name": name}).scalar_one())}
        if wait:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), key)
            held = True
        else:
            held = bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar())
        connection.commit()
        try:
            yield held
        finally:
            if held:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)
                connection.commit()


def transaction_lock(
    connection: Connection, seed: int, name: str = "", *, shared: bool = False
) -> None:
    """Hold a lock until the caller's transaction ends, for what must not change between a
    check and the write it allows (waiting for a holder). Call it first in the transaction.
    PostgreSQL: a transaction advisory lock, `shared` ones held side by side. SQLite: the
    database's write lock (BEGIN IMMEDIATE: one writer at a time, `shared` or not), taken
    before the transaction reads, so what it reads stays so until it commits."""
    if connection.dialect.name != "postgresql":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        return
    key = {"key": int(connection.execute(_LOCK_ID, {"seed": seed, "name": name}).scalar_one())}
    take = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    connection.execute(text(f"SELECT {take}(:key)"), key)


def _sqlite_lock_path(engine: Engine, seed: int, name: str) -> Path | None:
    """`<database file>.lock-<id>` for a SQLite file; None in memory."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    digest = hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:12]
    db_file = Path(database)
    return db_file.with_name(f"{db_file.name}.lock-{digest}")


@contextmanager
def _file_lock(path: Path, *, wait: bool) -> Iterator[bool]:
    """An exclusive `flock` on `path` (kept: removing a lock file races with its next
    holder); whether it was taken. Two opens conflict in one process too."""
    with path.open("a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
