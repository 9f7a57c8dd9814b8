"""One poller at a time: on PostgreSQL a pass holds a session advisory lock; a pass that
cannot get it is skipped. SQLite means a single process, so the lock is always granted."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from service.db.locks import advisory_lock

POLLER_LOCK_KEY = 0x6D66785F706F6C6C  # "mfx_poll": the seed of the advisory-lock id


@contextmanager
def poller_lock(engine: Engine) -> Iterator[bool]:
    """Yields whether this pass may poll (another instance holds the lock otherwise)."""
    with advisory_lock(engine, POLLER_LOCK_KEY, wait=False) as acquired:
        yield acquired
