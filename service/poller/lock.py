"""One poller pass at a time per database: on PostgreSQL a pass holds a session advisory lock
(a pass that cannot get it is skipped), on a SQLite file a file lock beside it. The lock goes
with its PostgreSQL connection (a restart, an idle timeout, `pg_terminate_backend`), and
another process may then take it: a pass asks it before each batch it sends and fences the
transactions recording what was sent (`HeldLock`), and stops once it is lost."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from service.db.locks import HeldLock, session_lock

POLLER_LOCK_KEY = 0x6D66785F706F6C6C  # "mfx_poll": the seed of the advisory-lock id

# the poller lock this thread holds (`poller_lock`), for a pass run under it (`locked=True`)
_held = threading.local()


@contextmanager
def poller_lock(engine: Engine) -> Iterator[HeldLock]:
    """Yields the lock (true when this pass may poll; another instance holds it otherwise),
    whose `check()` and `fence()` say whether it is held still."""
    with session_lock(engine, POLLER_LOCK_KEY, wait=False) as lock:
        before = getattr(_held, "lock", None)
        _held.lock = lock if lock else before
        try:
            yield lock
        finally:
            _held.lock = before


def held_poller_lock() -> HeldLock:
    """The poller lock this thread took (`poller_lock`), for a pass its caller runs under it;
    one that cannot be lost when none was taken here (the caller holds it otherwise)."""
    lock = getattr(_held, "lock", None)
    return lock if isinstance(lock, HeldLock) else HeldLock(True, f"{POLLER_LOCK_KEY:#x}")
