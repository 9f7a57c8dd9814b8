"""A worker's liveness: its heartbeat thread (beats, renews the lease of the item at hand)
and the time limit on one item.

Why a thread per item and a process restart (not a child process per item): Python cannot
kill a thread, so the item runs in its own daemon thread while the worker's main thread
waits at most `MFX_TASK_TIME_LIMIT`. Past it, the worker records the failure with its
reason (retried, dead-lettered after `MFX_MAX_ATTEMPTS`), stops renewing the lease, and
the worker process exits so that its supervisor starts a fresh one
(`service.worker.supervisor`): the stuck thread ends with its process. A child process per
item would cost a fresh interpreter (or a fork of a threaded process) per event and could
not run the in-process drains the tests use. An item stuck in C code that never releases
the GIL (a pathological regex, a huge integer) freezes the waiting thread too: for that
case the CLI arms `faulthandler`'s watchdog (a C thread, no GIL needed), which ends the
process a grace period after the limit; the supervisor restarts it, the item's lease
expires, it is retaken, and after `MFX_MAX_ATTEMPTS` such deaths it is dead-lettered
(`service.worker.loop`).

An item's limit grows with what it legitimately waits on (`service.worker.item_deadline`);
a worker whose lease was lost gives the item up at once (`service.worker.item_lease`).
"""

from __future__ import annotations

import faulthandler
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from service.adapters.call_deadline import grow_task_with_calls
from service.errors import ItemInterrupted, LeaseLost, TimeLimitExceeded
from service.logs import log_event
from service.models.health import ProcessRole
from service.worker.heartbeats import BEAT_EVERY_SECONDS, beat
from service.worker.inbox_claims import ClaimedEvent, renew_lease
from service.worker.item_deadline import ItemDeadline, arm_hard_limit
from service.worker.item_lease import ItemLease, bind_item

T = TypeVar("T")
ITEM_THREAD_PREFIX = "meterfix-item-"
WAIT_STEP_SECONDS = 0.2  # how often the waiting thread looks at the clock and the stop flag
STOP_WAIT_SECONDS = 2.0


def item_threads_alive() -> bool:
    """True while an abandoned item's thread still runs (it ends with the process only)."""
    return any(
        thread.name.startswith(ITEM_THREAD_PREFIX) and thread.is_alive()
        for thread in threading.enumerate()
    )


def heartbeat_interval(lease_seconds: float) -> float:
    """Beat (and renew) three times per lease, at most every `BEAT_EVERY_SECONDS`."""
    return min(BEAT_EVERY_SECONDS, lease_seconds / 3)


class WorkerHeartbeat:
    """A daemon thread that records this worker's heartbeat every `every` seconds and
    renews the lease of the item it is working on, so a slow but alive worker keeps it
    and a dead one loses it within one lease."""

    def __init__(self, engine: Engine, worker_id: str, every: float) -> None:
        self.engine, self.worker_id, self.every = engine, worker_id, every
        self._item: ClaimedEvent | None = None
        self._lease: ItemLease | None = None  # the item at hand's, told when it is lost
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Start beating; False when it already beats (the caller must not stop it)."""
        if self._thread is not None:
            return False
        self._stop = threading.Event()  # its own: a thread left behind by `stop` stays stopped
        self.pulse()  # visible at once, not one interval later
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="meterfix-heartbeat", daemon=True
        )
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop beating; a pulse stuck on a busy database is left behind (a daemon thread),
        so that a stopping worker never waits for it: its beat, should it land after the
        worker's last (`beat_ended`), leaves that one (`beat`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_WAIT_SECONDS)
            self._thread = None

    @contextmanager
    def working_on(self, claimed: ClaimedEvent, lease: ItemLease | None = None) -> Iterator[None]:
        """Renew `claimed`'s lease until the block ends (however it ends); a renewal that
        finds it lost (another worker holds the item) sets `lease.lost`."""
        with self._lock:
            self._item, self._lease = claimed, lease
        try:
            yield
        finally:
            with self._lock:
                self._item, self._lease = None, None

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.every):
            self.pulse()

    def pulse(self) -> None:
        with self._lock:
            item = self._item
        try:
            beat(self.engine, self.worker_id, ProcessRole.WORKER, _detail(item))
            if item is not None and not renew_lease(self.engine, item, self.worker_id):
                with self._lock:  # not merely finished in the meantime
                    lost = self._item is item
                    lease = self._lease
                if lost and (lease is None or not lease.lost.is_set()):
                    log_event("inbox.lease_lost", level=logging.WARNING, event_id=item.event_id)
                if lost and lease is not None:
                    lease.lost.set()  # the item is given up (`call_with_time_limit`)
        except SQLAlchemyError as exc:  # loop edge: a database blip; the next pulse retries
            log_event("worker.heartbeat_failed", level=logging.WARNING, error=type(exc).__name__)


def _detail(item: ClaimedEvent | None) -> dict[str, Any]:
    if item is None:
        return {"item": None}
    return {"item": item.event_id, "event_type": item.event_type, "attempt": item.attempts}


def call_with_time_limit(
    work: Callable[[], T],
    limit_seconds: float,
    *,
    name: str,
    stop: threading.Event | None = None,
    hard_limit: bool = False,
    lease: ItemLease | None = None,
) -> T:
    """Run `work` in its own daemon thread and return its result (or raise its exception).

    Raises TimeLimitExceeded past `limit_seconds`, ItemInterrupted when `stop` is set first,
    LeaseLost when `lease` is found lost first; each time the thread is left running (see the
    module docstring). On the thread, `check_lease` asks `lease`. `hard_limit` arms the
    faulthandler watchdog that ends the process if even this thread cannot run."""
    box: list[tuple[bool, Any]] = []
    finished = threading.Event()
    armed = hard_limit and arm_hard_limit(limit_seconds)
    deadline = ItemDeadline(limit_seconds, armed)

    def target() -> None:
        bind_item(deadline, lease)
        grow_task_with_calls(deadline)
        try:
            box.append((True, work()))
        except BaseException as exc:  # handed to the waiting thread, which re-raises it
            box.append((False, exc))
        finally:
            finished.set()

    try:
        threading.Thread(target=target, name=name, daemon=True).start()
        while not finished.wait(min(WAIT_STEP_SECONDS, max(deadline.left(), 0))):
            if stop is not None and stop.is_set():
                raise ItemInterrupted(name)
            if lease is not None and lease.lost.is_set():
                lease.left_running = True
                raise LeaseLost(lease.reason())
            if deadline.left() <= 0:
                raise TimeLimitExceeded(limit_seconds, deadline.given(time.monotonic()))
    finally:
        deadline.waited = False
        if armed:
            faulthandler.cancel_dump_traceback_later()
    ok, value = box[0]
    if ok:
        return cast(T, value)  # `work`'s own result
    raise value
