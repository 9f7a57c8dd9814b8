"""The webhook INSERT on a SQLite file: one process's own connection.

No pool checkout/checkin per request, and sqlite3's statement cache keeps the INSERT
prepared. Writers in one process take turns on a mutex, and processes on a lock file.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine

from service.db import sqlite_pragmas
from service.intake.writers import WriterRegistry

_WRITER_LOCKS: dict[tuple[int, str], int] = {}  # (process, SQLite file) -> open lock file


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


def _make_writer(engine: Engine) -> SQLiteWriter | None:
    lock_fd = _writer_lock_fd(engine)
    if lock_fd is None:
        return None
    return SQLiteWriter(str(engine.url.database), lock_fd, sqlite_pragmas(engine))


_WRITERS: WriterRegistry[SQLiteWriter] = WriterRegistry(
    lambda engine: engine.dialect.name == "sqlite", _make_writer
)


def sqlite_writer(engine: Engine) -> SQLiteWriter | None:
    """This process's writer for a SQLite database file; None for other databases."""
    return _WRITERS.get(engine)


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
