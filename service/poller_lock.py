"""One poller at a time: on PostgreSQL a pass holds a session advisory lock; a pass that
cannot get it is skipped. SQLite means a single process, so the lock is always granted."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

from service.db import is_postgres

POLLER_LOCK_KEY = 0x6D66785F706F6C6C  # "mfx_poll": one fixed advisory-lock key


@contextmanager
def poller_lock(engine: Engine) -> Iterator[bool]:
    """PostgreSQL: a session advisory lock held for the pass. SQLite: always granted."""
    if not is_postgres(engine):
        yield True
        return
    with engine.connect() as conn:
        params = {"key": POLLER_LOCK_KEY}
        acquired = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), params).scalar())
        conn.commit()
        try:
            yield acquired
        finally:
            if acquired:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), params)
                conn.commit()
