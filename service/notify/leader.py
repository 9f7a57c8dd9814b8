"""One sender at a time: on PostgreSQL every notification pass holds a session advisory lock,
and a pass that cannot get it does nothing (another worker is the leader for it). SQLite
means a single worker process, so the lock is always granted there."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

from service.db import is_postgres

NOTIFY_LOCK_KEY = 0x6D66785F6E6F7469  # "mfx_noti": one fixed advisory-lock key


@contextmanager
def notify_leader(engine: Engine, key: int = NOTIFY_LOCK_KEY) -> Iterator[bool]:
    """Yields True when this process leads the pass (the lock is released at the end)."""
    if not is_postgres(engine):
        yield True
        return
    with engine.connect() as conn:
        params = {"key": key}
        acquired = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), params).scalar())
        conn.commit()
        try:
            yield acquired
        finally:
            if acquired:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), params)
                conn.commit()
