"""The webhook INSERT on PostgreSQL: one process's own autocommit connection.

In autocommit a single INSERT is its own transaction, committed (and, with PostgreSQL's
default `synchronous_commit`, flushed to its WAL on disk) before `execute` returns: one round
trip per event, where a pooled connection costs a checkout with its ping, then BEGIN, INSERT
and COMMIT. Measured on the 2-core box: ~680 -> ~320 us per event, client CPU ~280 -> ~90 us.

The connection is made through the engine's pool (same URL, options and dialect set-up) and
then detached from it, lazily, in the process that uses it (`service.intake.writers`).
A connection that fails is dropped and the INSERT is tried once more on a new one; that is
safe because a repeated event id is a unique violation, which the caller reports as a
duplicate delivery. An INSERT the server cancels at its time limit (`WRITE_SECONDS`) is not
tried again: nothing was stored, and the caller answers 503 (Stripe delivers it again).
"""

from __future__ import annotations

import os
import threading
from contextlib import suppress
from typing import Any

from sqlalchemy import Engine

from service.errors import InboxUnavailable
from service.intake.writers import WriterRegistry

# How long the INSERT may take, waiting for a lock included (the session's
# `statement_timeout`). Unbounded, a table locked by another session (`LOCK TABLE`, a
# migration) held the request and its server thread as long as the lock was held, long after
# Stripe gave up on the delivery (~18 s) and sent it again. A webhook waits as long at most
# for its turn on the process's connection: twice this in all.
WRITE_SECONDS = 5
CANCELLED = "57014"  # query_canceled: the time limit ran out (the connection is fine)


class PostgresWriter:
    def __init__(self, engine: Engine) -> None:
        self.pid = os.getpid()
        self._engine = engine
        self._dbapi: Any = engine.dialect.loaded_dbapi
        self._connection: Any = None  # psycopg's own connection, detached from the pool
        self._mutex = threading.Lock()

    def commit_one(self, sql: str, parameters: tuple[Any, ...]) -> None:
        """Run one statement in autocommit: committed when this returns, or it raises
        (`InboxUnavailable` when its turn on the connection did not come within
        `WRITE_SECONDS`: the process's webhooks queue there behind one the server holds, four
        at once answered after 5, 10, 15 and 20 s)."""
        if not self._mutex.acquire(timeout=WRITE_SECONDS):
            raise InboxUnavailable(f"the writer connection stayed busy for {WRITE_SECONDS} s")
        try:
            try:
                self._execute(sql, parameters)
            except (self._dbapi.OperationalError, self._dbapi.InterfaceError) as exc:
                if getattr(exc, "sqlstate", None) == CANCELLED:
                    raise  # once more would wait as long again: the caller answers 503
                self._drop()  # the server restarted, a proxy cut it, an idle timeout...
                self._execute(sql, parameters)  # once more, on a new connection
        finally:
            self._mutex.release()

    def _execute(self, sql: str, parameters: tuple[Any, ...]) -> None:
        if self._connection is None:
            self._connection = self._connect()
        cursor = self._connection.cursor()
        try:
            cursor.execute(sql, parameters)
        finally:
            cursor.close()

    def _connect(self) -> Any:
        """psycopg's own connection, made through the pool and detached from it: closed here,
        never by the pool, whose reset (a ROLLBACK) of a connection the server had ended
        logged an ERROR with a traceback ("Exception during reset or similar")."""
        pooled = self._engine.raw_connection()
        driver: Any = pooled.driver_connection
        pooled.detach()  # ours from now on: the pool neither hands it out nor resets it
        driver.rollback()  # the pool's ping may have opened a transaction
        driver.autocommit = True
        driver.execute(f"SET statement_timeout = '{WRITE_SECONDS}s'")
        return driver

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with suppress(self._dbapi.Error):  # already broken: nothing left to close cleanly
                connection.close()

    def close(self) -> None:
        with self._mutex:
            self._drop()


_WRITERS: WriterRegistry[PostgresWriter] = WriterRegistry(
    lambda engine: engine.dialect.name == "postgresql", PostgresWriter
)


def postgres_writer(engine: Engine) -> PostgresWriter | None:
    """This process's writer for a PostgreSQL engine; None for other databases."""
    return _WRITERS.get(engine)
