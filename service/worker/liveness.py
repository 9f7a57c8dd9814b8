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

An item's limit grows with what it legitimately waits on: while a call whose deadline is
extended for its size (a Stripe file's contents, a bucket object read, downloaded or
uploaded: the time their bytes take at 1 MiB/s, `call_deadline.CallDeadline.extend_to`) is
under way, its time does not count against the item, up to what the call was given
(`grow_task_with_calls`), and `MAX_GRANTED_SECONDS` in all. A file larger than the limit
allows, read steadily, is no longer failed at every try (its rows never corrected); one whose
bytes stop is failed once its allowance is used up. Once a call ends, only the time it took
stays granted: the allowance it did not use is not the item's (a 1 GB file fetched in 10 s
gave an item hanging after it ~1000 s more).

A worker whose lease was lost (its process paused, or starved, past the lease: another worker
has taken the item over) gives the item up at once, as a stop mid-item does: the heartbeat
that finds the lease gone tells the waiting thread, which leaves the item's thread behind
(the process restarts), and the item's thread itself asks before what another worker would
do again: after a wait for its turn (`waiting_turn`), before each upload of a run and first
in the transactions that commit its results (`lease_as_lock`), so it writes no output, run
or outcome of an item no longer its own.
"""

from __future__ import annotations

import faulthandler
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar, cast

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from service.adapters.call_deadline import CallDeadline, grow_task_with_calls
from service.db.locks import HeldLock
from service.errors import ItemInterrupted, LeaseLost, TimeLimitExceeded
from service.logs import log_event
from service.models.health import ProcessRole
from service.worker.heartbeats import BEAT_EVERY_SECONDS, beat
from service.worker.inbox_claims import ClaimedEvent, holds_lease, holds_lease_in, renew_lease

T = TypeVar("T")
ITEM_THREAD_PREFIX = "meterfix-item-"
WAIT_STEP_SECONDS = 0.2  # how often the waiting thread looks at the clock and the stop flag
HARD_LIMIT_GRACE_SECONDS = 30.0  # the watchdog's margin past the time limit
STOP_WAIT_SECONDS = 2.0
# The most an item's calls may add to its time limit (`_Deadline.given`): a 3.5 GiB file at
# 1 MiB/s (a usage file in the bucket is at most 1 GB); past it the task fails as a hung one.
MAX_GRANTED_SECONDS = 3600.0


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
    armed = hard_limit and _arm_watchdog(limit_seconds + HARD_LIMIT_GRACE_SECONDS)
    deadline = _Deadline(limit_seconds, armed)

    def target() -> None:
        _ITEM.deadline, _ITEM.lease = deadline, lease
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


class _Times(NamedTuple):
    """An item's clock, replaced whole (the waiting thread reads it while the item's thread
    moves it): its deadline (`time.monotonic()`), the seconds its ended calls added to it, and
    its calls under way extended for their size (each: its start and the seconds it was
    given beyond its own deadline)."""

    at: float
    granted: float
    calls: dict[CallDeadline, tuple[float, float]]

    def given(self, now: float, but: CallDeadline | None = None) -> float:
        """The seconds its calls added by `now` (the one `but` left out): the ended ones',
        and the time each call under way has taken, up to what it was given;
        `MAX_GRANTED_SECONDS` in all at most."""
        live = sum(min(now - s, g) for call, (s, g) in self.calls.items() if call is not but)
        return min(self.granted + live, MAX_GRANTED_SECONDS)

    def latest(self) -> float:
        """The latest the item may run to, should its calls under way take all they were
        given."""
        grown = sum(grown for _, grown in self.calls.values())
        return self.at + min(grown, MAX_GRANTED_SECONDS - self.granted)


class _Deadline:
    """When an item's time is up; paused while it waits for its turn (a lock another item
    holds: that wait is not its work) and counted afresh after; and while a call extended for
    its size is under way (`call_grown`), up to what the call was given: once the call ends
    (`call_ended`) the time it took stays granted, the rest of its allowance does not (it
    did: a 1 GB file fetched in 10 s gave the item ~1000 s more to hang in). Its `times` are
    written by the item's thread, read by the waiting one."""

    def __init__(self, seconds: float, watchdog: bool) -> None:
        self.seconds, self.watchdog = seconds, watchdog
        self.times = _Times(time.monotonic() + seconds, 0.0, {})
        self.waited = True  # False once the waiting thread has given up on the item

    def given(self, now: float) -> float:
        return self.times.given(now)

    def left(self) -> float:
        times, now = self.times, time.monotonic()
        return times.at + times.given(now) - times.granted - now

    def call_grown(self, call: CallDeadline, started: float, grown: float) -> None:
        """`call` is given `grown` s more for its size: the item may wait on it that long."""
        times = self.times
        self.times = times._replace(calls={**times.calls, call: (started, grown)})
        self._arm()

    def call_ended(self, call: CallDeadline) -> None:
        """Only the time `call` took stays granted."""
        times, now = self.times, time.monotonic()
        if call not in times.calls:
            return
        took = times.given(now) - times.given(now, but=call)
        calls = {other: span for other, span in times.calls.items() if other is not call}
        self.times = _Times(times.at + took, times.granted + took, calls)
        self._arm()

    def _arm(self) -> None:
        """The faulthandler watchdog past the latest the item may run now."""
        if self.watchdog and self.waited and self.times.at != math.inf:
            _arm_watchdog(self.times.latest() - time.monotonic() + HARD_LIMIT_GRACE_SECONDS)

    def pause(self) -> None:
        self.times = self.times._replace(at=math.inf)
        if self.watchdog and self.waited:
            faulthandler.cancel_dump_traceback_later()

    def restart(self) -> None:
        times = self.times
        self.times = times._replace(at=time.monotonic() + self.seconds + times.granted)
        self._arm()


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


_ITEM = threading.local()  # on an item's thread: its `_Deadline` and its `ItemLease`


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
    deadline: _Deadline | None = getattr(_ITEM, "deadline", None)
    if deadline is None:
        yield
        return
    deadline.pause()
    try:
        yield
    finally:
        deadline.restart()
    check_lease()


def _arm_watchdog(seconds: float) -> bool:
    try:
        faulthandler.dump_traceback_later(seconds, exit=True, file=sys.stderr)
    except (AttributeError, OSError, ValueError) as exc:  # stderr without a file descriptor
        log_event("worker.watchdog_unavailable", level=logging.WARNING, error=type(exc).__name__)
        return False
    return True
