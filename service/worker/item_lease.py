"""The lease of the item a worker's thread works on, and what that thread asks of it.

A worker whose lease was lost (its process paused, or starved, past the lease: another worker
has taken the item over) gives the item up at once, as a stop mid-item does: the heartbeat
that finds the lease gone tells the waiting thread (`liveness.call_with_time_limit`), which
leaves the item's thread behind (the process restarts), and the item's thread itself asks
before what another worker would do again: after a wait for its turn (`waiting_turn`), before
each upload of a run and first in the transactions that commit its results
(`lease_as_lock`), so it writes no output, run or outcome of an item no longer its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

from service.db.locks import HeldLock
from service.errors import LeaseLost
from service.worker.inbox_claims import ClaimedEvent, holds_lease, holds_lease_in
from service.worker.item_deadline import ItemDeadline


class ItemLease:
    """The lease of the item a thread works on: `lost` is set by the heartbeat that finds it
    gone; `held` asks the database (another worker may have claimed it since it expired).
    `left_running`: the item's thread was left running when the lease was found lost."""

    def __init__(
        self,
        event_id: str,
        held: Callable[[], bool],
        held_in: Callable[[Connection], bool] = lambda _: True,
    ) -> None:
        self.event_id, self.held, self.held_in = event_id, held, held_in
        self.lost = threading.Event()
        self.left_running = False

    def reason(self) -> str:
        return (
            f"the lease on {self.event_id} was lost (another worker took the item over): "
            "given up, nothing recorded"
        )

    def check(self) -> None:
        """LeaseLost unless this worker holds the item still."""
        if self.lost.is_set() or not self.held():
            self.lost.set()
            raise LeaseLost(self.reason())

    def fence(self, connection: Connection) -> None:
        """`check` first in a transaction committing the item's work: the row stays ours
        until the transaction ends (`holds_lease_in`), or nothing is committed."""
        if self.lost.is_set() or not self.held_in(connection):
            self.lost.set()
            raise LeaseLost(self.reason())


_ITEM = threading.local()  # on an item's thread: its `ItemDeadline` and its `ItemLease`


def bind_item(deadline: ItemDeadline, lease: ItemLease | None) -> None:
    """On an item's thread, first: its deadline and lease, for what it asks of them."""
    _ITEM.deadline, _ITEM.lease = deadline, lease


def check_lease() -> None:
    """On an item's thread: LeaseLost when its lease was lost (another worker does the item
    now), before work that worker would do again. Off an item's thread (the CLI) nothing."""
    lease: ItemLease | None = getattr(_ITEM, "lease", None)
    if lease is not None:
        lease.check()


def item_lease(engine: Engine, claimed: ClaimedEvent, worker_id: str) -> ItemLease:
    """`claimed`'s lease as `worker_id` holds it."""
    return ItemLease(
        claimed.event_id,
        lambda: holds_lease(engine, claimed, worker_id),
        lambda connection: holds_lease_in(connection, claimed, worker_id),
    )


class _LeaseLock(HeldLock):
    """An item's lease as a lock its runs are done under (`RunContext.locks`: checked before
    each upload, fenced in each transaction of results), raising LeaseLost when lost."""

    def __init__(self, lease: ItemLease) -> None:
        super().__init__(True, f"the lease on {lease.event_id}")
        self.lease = lease

    def held(self) -> bool:
        return not self.lease.lost.is_set() and self.lease.held()

    def check(self) -> None:
        self.lease.check()

    def fence(self, connection: Connection) -> None:
        self.lease.fence(connection)


def lease_as_lock() -> tuple[HeldLock, ...]:
    """On an item's thread: its lease, as a lock for the locks its runs are done under (a
    run stops before an upload or commit once another worker holds the item); else none."""
    lease: ItemLease | None = getattr(_ITEM, "lease", None)
    return () if lease is None else (_LeaseLock(lease),)


@contextmanager
def waiting_turn() -> Iterator[None]:
    """Around an item's wait for its turn (a re-run waits for the one before it), on its
    thread: the wait does not count, and its `MFX_TASK_TIME_LIMIT` counts from the end of
    it. The worker still stops it on a signal. A wait that outlived the item's lease (the
    process paused meanwhile, another worker took the item) ends in LeaseLost: that worker
    does the item. Off an item's thread (the CLI) nothing."""
    deadline: ItemDeadline | None = getattr(_ITEM, "deadline", None)
    if deadline is None:
        yield
        return
    deadline.pause()
    try:
        yield
    finally:
        deadline.restart()
    check_lease()
