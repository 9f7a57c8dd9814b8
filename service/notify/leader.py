"""One sender at a time: on PostgreSQL every notification pass holds a session advisory lock,
and a pass that cannot get it does nothing (another worker is the leader for it). SQLite
means a single worker process, so the lock is always granted there."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from service.db.locks import advisory_lock

NOTIFY_LOCK_KEY = 0x6D66785F6E6F7469  # "mfx_noti": the seed of the advisory-lock ids
NOTIFY_LOCK = ":meterfix.notify"  # one name per job, so a process's jobs never block each other


@contextmanager
def notify_leader(engine: Engine, name: str = NOTIFY_LOCK) -> Iterator[bool]:
    """Yields True when this process leads the pass (the lock is released at the end)."""
    with advisory_lock(engine, NOTIFY_LOCK_KEY, name, wait=False) as leader:
        yield leader
