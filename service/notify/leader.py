"""One sender at a time: on PostgreSQL every notification pass holds a session advisory lock,
and a pass that cannot get it does nothing (another worker is the leader for it). SQLite
means a single worker process, so the lock is always granted there.

The lock lives as long as its database connection: dropped while a pass sends (PostgreSQL
restarted, an idle timeout), it is gone, and another worker leads the next pass while this
one goes on. So a pass that must not send beside another leader holds `leading`'s lock,
calls its `check()` before each send (`LockLost`: it stops), and records what it sent
`recording` (fenced): a leader that lost the lead sends nothing more and records nothing.
The lock keeps passes from overlapping; what makes a message go once even when they do (a
leader still inside a send when the next one starts) is its claim: `digest_runs` rows for
digests, `critical_messages` rows for critical alerts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from service.db import is_postgres
from service.db.locks import HeldLock, session_lock

NOTIFY_LOCK_KEY = 0x6D66785F6E6F7469  # "mfx_noti": the seed of the advisory-lock ids
NOTIFY_LOCK = ":meterfix.notify"  # one name per job, so a process's jobs never block each other

# The lead of a sender that runs alone (`meterfix digest`, a test): never lost.
ALONE = HeldLock(True, "alone")


@contextmanager
def leading(engine: Engine, name: str = NOTIFY_LOCK) -> Iterator[HeldLock]:
    """The pass's lock: true when this process leads it, and by which it learns, before each
    send, that it leads it still (`HeldLock.check`); let go at the end."""
    with session_lock(engine, NOTIFY_LOCK_KEY, name, wait=False) as lock:
        yield lock


@contextmanager
def recording(engine: Engine, lock: HeldLock) -> Iterator[None]:
    """Around the transaction that records a send: `LockLost` (nothing recorded) unless the
    lead is held still. On PostgreSQL the lock's fence is taken in a transaction of its own,
    open until the block's transaction committed: a next leader waits for its end before it
    reads (`session_lock`), as for a fence inside the recording transaction (opened by the
    notify stores, which take no connection), so it reads what was recorded."""
    if not is_postgres(engine):
        lock.check()
        yield
        return
    with engine.connect() as connection, connection.begin():
        lock.fence(connection)
        yield
