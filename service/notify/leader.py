"""One sender at a time: on PostgreSQL every notification pass holds a session advisory lock,
and a pass that cannot get it does nothing (another worker is the leader for it). SQLite
means a single worker process, so the lock is always granted there."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

from service.db import is_postgres

# Advisory locks are per database, not per schema: the key names the schema too, so two
# meterfix installations in one database (or parallel test runs) do not block each other.
_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext(current_schema() || :name))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtext(current_schema() || :name))"
NOTIFY_LOCK = ":meterfix.notify"  # one name per job, so a process's jobs never block each other


@contextmanager
def notify_leader(engine: Engine, name: str = NOTIFY_LOCK) -> Iterator[bool]:
    """Yields True when this process leads the pass (the lock is released at the end)."""
    if not is_postgres(engine):
        yield True
        return
    with engine.connect() as conn:
        params = {"name": name}
        acquired = bool(conn.execute(text(_TRY_LOCK), params).scalar())
        conn.commit()
        try:
            yield acquired
        finally:
            if acquired:
                conn.execute(text(_UNLOCK), params)
                conn.commit()
