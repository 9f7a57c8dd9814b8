"""Database engine construction and sessions (SQLite in WAL mode, or PostgreSQL)."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlmodel import Session, create_engine

from service.config import SQLiteSynchronous

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
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


def make_engine(url: str, *, synchronous: str = SQLiteSynchronous.NORMAL) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout, foreign keys and `synchronous`."""
    if url.startswith("sqlite"):
        if synchronous not in set(SQLiteSynchronous):
            levels = ", ".join(SQLiteSynchronous)
            raise ValueError(f"SQLite synchronous must be one of: {levels}")
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        pragmas = partial(_sqlite_pragmas, synchronous=synchronous)
        _PRAGMAS[engine] = pragmas
        event.listen(engine, "connect", pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _sqlite_pragmas(dbapi_connection: object, _record: object = None, *, synchronous: str) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
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


class SQLiteWriter:
    """One process's own connection for short write transactions on a SQLite file (the
    webhook INSERT): no pool checkout/checkin per request, and sqlite3's statement cache
    keeps the INSERT prepared. Made on first use in the process that uses it (never before
    a fork); closed when the engine is disposed. Writers in one process take turns on a
    mutex, and processes on a lock file (`_writer_lock_fd`)."""

    def __init__(
        self, database: str, lock_fd: int | None, pragmas: Callable[[object], None]
    ) -> None:
        self.pid = os.getpid()
        self.connection = sqlite3.connect(database, timeout=30, check_same_thread=False)
        pragmas(self.connection)
        self._lock_fd = lock_fd
        self._mutex = threading.Lock()

    def commit_one(self, sql: str, parameters: tuple[Any, ...]) -> None:
        """Run one statement and COMMIT; roll back and re-raise on any error."""
        with self._mutex, _file_lock(self._lock_fd):
            try:
                self.connection.execute(sql, parameters)
                self.connection.commit()
            except BaseException:
                self.connection.rollback()
                raise

    def close(self) -> None:
        with self._mutex:
            self.connection.close()


_WRITERS: weakref.WeakKeyDictionary[Engine, SQLiteWriter] = weakref.WeakKeyDictionary()
_WRITERS_GUARD = threading.Lock()
_INHERITED: list[SQLiteWriter] = []  # a parent's connections, never closed in a child
_WRITER_LOCKS: dict[tuple[int, str], int] = {}  # (process, SQLite file) -> open lock file


def sqlite_writer(engine: Engine) -> SQLiteWriter | None:
    """This process's writer for a SQLite database file; None for other databases."""
    writer = _WRITERS.get(engine)
    if writer is not None and writer.pid == os.getpid():
        return writer
    lock_fd = _writer_lock_fd(engine)
    if lock_fd is None:
        return None
    with _WRITERS_GUARD:
        writer = _WRITERS.get(engine)
        if writer is None or writer.pid != os.getpid():
            if writer is not None:  # closing it here could disturb the parent's locks
                _INHERITED.append(writer)
            else:
                event.listen(engine, "engine_disposed", _close_writer)
            pragmas = _PRAGMAS.get(engine) or partial(
                _sqlite_pragmas, synchronous=SQLiteSynchronous.NORMAL
            )
            writer = SQLiteWriter(str(engine.url.database), lock_fd, pragmas)
            _WRITERS[engine] = writer
    return writer


def _close_writer(engine: Engine) -> None:
    writer = _WRITERS.get(engine)
    if writer is not None and writer.pid == os.getpid():
        del _WRITERS[engine]
        writer.close()


@contextmanager
def _file_lock(fd: int | None) -> Iterator[None]:
    """Web workers writing one SQLite file take turns on a lock file around INSERT + COMMIT.

    SQLite stays the guard of correctness; this only makes waiting cheap and keeps the WAL
    small. A blocked flock wakes as soon as the holder is done, where SQLite's busy handler
    sleeps 1 ms or more; and no worker holds a read snapshot while another commits, so the
    automatic checkpoint can restart the WAL. Without it, under steady load from two workers
    the WAL grew past 50 MB in seconds and every commit ran a checkpoint (fdatasync included).
    """
    if fd is None:
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _writer_lock_fd(engine: Engine) -> int | None:
    """The lock file beside a SQLite database file, opened once per process (a forked child
    opens its own); None for other databases (in-memory included) or when it cannot be opened."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database.startswith((":", "file:")):
        return None
    key = (os.getpid(), database)
    fd = _WRITER_LOCKS.get(key)
    if fd is None:
        try:
            fd = os.open(f"{database}-writer.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:  # e.g. a missing directory: SQLite itself reports the real problem
            return None
        _WRITER_LOCKS[key] = fd
    return fd


def is_postgres(engine: Engine) -> bool:
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


def upgrade(url: str, revision: str = "head") -> None:
    """Run Alembic migrations shipped inside the package (works from any directory)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, revision)
