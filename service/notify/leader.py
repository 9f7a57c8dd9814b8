"""One sender at a time: on PostgreSQL every notification pass holds a session advisory lock,
and a pass that cannot get it does nothing (another worker is the leader for it). SQLite
means a single worker process, so the lock is always granted there.

The lock lives as long as its database connection: dropped while a pass sends (PostgreSQL
restarted, an idle timeout), it is gone, and another worker leads the next pass while this
one goes on. A pass that must not send beside another leader holds `leading`'s lock and
calls its `check()` before each send (`LockLost`: it stops), and `fence(connection)` first
in the transaction that records what it sent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from service.db.locks import HeldLock, session_lock

NOTIFY_LOCK_KEY = 0x6D66785F6E6F7469  # "mfx_noti": the seed of the advisory-lock ids
NOTIFY_LOCK = ":meterfix.notify"  # one name per job, so a process's jobs never block each other


@contextmanager
def leading(engine: Engine, name: str = NOTIFY_LOCK) -> Iterator[HeldLock]:
    """The pass's lock: true when this process leads it, and by which it learns, before each
    send, that it leads it still (`HeldLock.check`); let go at the end."""
    with session_lock(engine, NOTIFY_LOCK_KEY, name, wait=False) as lock:
        yield lock


@contextmanager
def notify_leader(engine: Engine, name: str = NOTIFY_LOCK) -> Iterator[bool]:
    """Yields True when this process leads the pass (the lock is released at the end); a
    lock lost meanwhile goes unnoticed here (`leading` tells it)."""
    with leading(engine, name) as lock:
        yield lock.taken
