"""One poller at a time: on PostgreSQL a pass holds a session advisory lock; a pass that
cannot get it is skipped. SQLite means a single process, so the lock is always granted.

Advisory locks are shared by the whole PostgreSQL cluster, so the lock id is derived from
POLLER_LOCK_KEY and the database and schema: two meterfix installations (or test runs) in
different schemas of one server never keep each other's poller from running."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

from service.db import is_postgres

POLLER_LOCK_KEY = 0x6D66785F706F6C6C  # "mfx_poll": the seed of the advisory-lock id
_LOCK_ID = text("SELECT hashtextextended(current_database() || '.' || current_schema(), :key)")


@contextmanager
def poller_lock(engine: Engine) -> Iterator[bool]:
    """PostgreSQL: a session advisory lock held for the pass. SQLite: always granted."""
    if not is_postgres(engine):
        yield True
        return
    with engine.connect() as conn:
        key = int(conn.execute(_LOCK_ID, {"key": POLLER_LOCK_KEY}).scalar_one())
        params = {"key": key}
        acquired = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), params).scalar())
        conn.commit()
        try:
            yield acquired
        finally:
            if acquired:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), params)
                conn.commit()
