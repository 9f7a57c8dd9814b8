"""A deadline for a network call in all, where the library making it (botocore, the Stripe
SDK's requests client, a requests download) has none, only a timeout per read, which never
fires on an answer trickling in a byte at a time, and lets its caller reach no socket it reads
from. `CallDeadline.watching` lists the sockets the calling thread opens (an audit hook on
`socket.__new__`); at the deadline the process's watchdog thread shuts them down, the read
waiting on one ends at once, and the call raises TimeoutError. `in_all` bounds every call a
thread makes in a block (a listing of many pages, each a call) by one deadline.
`grow_task_with_calls` lets the task a thread runs (a worker's item) wait, beside its own
time limit, on a call given more time for its size (`extend_to`) while the call lasts: a large
file read steadily is not failed by the task's limit while its own deadline allows it, and once
the call ends the task keeps only the time it took (`TaskClock`).

One watchdog thread a process watches every deadline (a heap of them, earliest first): a
timer thread a call cost ~3 ms of a busy CPU a request. It is made again in a forked child
(`os.register_at_fork`), and a deadline cancelled waits for a hang-up under way, so a late
one never shuts a pooled socket its thread's next call is using."""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from typing import Any, NamedTuple, Protocol


class CallDeadline:
    """The time a call (or a streamed transfer) may take in all. Past it, the watchdog shuts
    down `sockets` (the ones the calling thread's client opened: its own, kept across calls,
    as its connection pool keeps them), so the read waiting on one ends at once, and a socket
    the call opens after (the library retrying) fails as it is made. `what` names the call in
    the TimeoutError's reason. Inside `in_all`, the block's deadline comes first when sooner."""

    def __init__(self, seconds: float, what: str, sockets: list[socket.socket]) -> None:
        self.seconds, self.what, self.passed = seconds, what, False
        self._sockets = sockets
        self._started = time.monotonic()
        self._entry: int | None = None  # its live entry in the watchdog's heap
        self._grown = 0.0  # seconds `extend_to` added
        self._task: TaskClock | None = None  # told of them (`grow_task_with_calls`)
        self._cap: _Cap | None = getattr(_calls, "cap", None)
        self._capped = self._cap is not None and self._cap.end < self._started + seconds
        if self._cap is not None and self._capped:
            self.seconds = max(0.0, self._cap.end - self._started)
        if self.seconds <= 0:
            self.passed = True  # the block's deadline passed: not started at all
        else:
            _WATCHDOG.watch(self, self._started + self.seconds)

    def extend_to(self, seconds: float) -> None:
        """Allow the call `seconds` in all from its start (a transfer whose size is known
        once it began), unless the deadline passed already (or the block's comes sooner)."""
        if self._cap is not None and self._cap.end < self._started + seconds:
            seconds = self._cap.end - self._started
            self._capped = True
        if seconds > self.seconds:
            grown = _WATCHDOG.move(self, seconds)
            task: TaskClock | None = getattr(_calls, "task", None)
            if grown > 0 and task is not None:
                self._grown += grown
                self._task = task
                task.call_grown(self, self._started, self._grown)  # it waits on the call

    def _hang_up(self) -> None:
        """The watchdog's, under its lock: the deadline passed."""
        self.passed = True
        for sock in list(self._sockets):
            with suppress(OSError):  # closed already, or never connected
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain one, also for TLS

    def cancel(self) -> None:
        """No hang-up after this returns (one under way is waited for); the call is over,
        for its task too."""
        _WATCHDOG.unwatch(self)
        task, self._task = self._task, None
        if task is not None:
            task.call_ended(self)

    def opened(self, sock: socket.socket) -> None:
        """A socket the call opens: shut at the deadline; past it, not opened at all."""
        _WATCHDOG.listed(self, sock)

    def timeout(self) -> TimeoutError:
        if self._cap is not None and self._capped:
            what, seconds = f"{self._cap.what} ({self.what})", self._cap.seconds
            return TimeoutError(
                f"{what}: not done within {seconds:g} s in all (answering too slowly, or not "
                "at all)"
            )
        return TimeoutError(
            f"{self.what}: not done within {self.seconds:g} s (answering too slowly, or not at all)"
        )

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Run the block with the sockets this thread opens in it listed for `_hang_up`; what
        fails in it once the deadline passed is this TimeoutError (raised at once when it
        passed before)."""
        if self.passed:
            raise self.timeout()
        _watch_new_sockets()
        before = getattr(_calls, "deadline", None)
        _calls.deadline = self
        try:
            yield
        except Exception as exc:
            if self.passed:
                raise self.timeout() from exc
            raise
        finally:
            _calls.deadline = before


class _Cap(NamedTuple):
    end: float  # time.monotonic()
    seconds: float
    what: str


@contextmanager
def in_all(seconds: float, what: str) -> Iterator[None]:
    """Every `CallDeadline` this thread starts in the block ends by the block's deadline at the
    latest (`seconds` from now; an enclosing block's when sooner): a listing of many pages, a
    call each, bounded in all. A call started past it fails at once (TimeoutError), its
    reason naming `what`."""
    before: _Cap | None = getattr(_calls, "cap", None)
    cap = _Cap(time.monotonic() + seconds, seconds, what)
    _calls.cap = cap if before is None or cap.end < before.end else before
    try:
        yield
    finally:
        _calls.cap = before


class _Watchdog:
    """One daemon thread a process that hangs up the deadlines passed, earliest first. Its
    lock is held while it hangs one up, so `unwatch` returning means no hang-up to come."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """A fresh watchdog (at start, and in a forked child: the parent's thread is not
        there, its lock may have been held)."""
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, CallDeadline]] = []  # (when, entry, deadline)
        self._entries = itertools.count()
        self._live = 0  # entries not cancelled nor moved
        self._thread: threading.Thread | None = None

    def watch(self, deadline: CallDeadline, when: float) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="meterfix-call-deadlines", daemon=True
                )
                self._thread.start()
            self._push(deadline, when)

    def move(self, deadline: CallDeadline, seconds: float) -> float:
        """The seconds `deadline` was moved by (none once passed or cancelled)."""
        with self._cond:
            if deadline.passed or deadline._entry is None:  # passed, or cancelled
                return 0.0
            grown, deadline.seconds = seconds - deadline.seconds, seconds
            self._live -= 1
            self._push(deadline, deadline._started + seconds)
            return grown

    def unwatch(self, deadline: CallDeadline) -> None:
        with self._cond:
            if deadline._entry is None:
                return
            deadline._entry = None
            self._live -= 1
            if len(self._heap) > 64 and len(self._heap) > 4 * self._live:
                self._heap = [e for e in self._heap if e[2]._entry == e[1]]
                heapq.heapify(self._heap)

    def listed(self, deadline: CallDeadline, sock: socket.socket) -> None:
        """`sock` listed among `deadline`'s sockets, or TimeoutError when it passed: under the
        lock, so no hang-up comes between the check and the listing (one did, and the socket
        listed after it was never shut)."""
        with self._cond:
            if deadline.passed:
                raise deadline.timeout()
            deadline._sockets.append(sock)

    def _push(self, deadline: CallDeadline, when: float) -> None:
        entry = next(self._entries)
        deadline._entry = entry
        self._live += 1
        heapq.heappush(self._heap, (when, entry, deadline))
        if self._heap[0][1] == entry:  # sooner than the one waited for
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, entry, deadline = heapq.heappop(self._heap)
                    if deadline._entry == entry:
                        deadline._entry = None
                        self._live -= 1
                        deadline._hang_up()
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG._reset)

_calls = threading.local()  # `deadline`: the thread's call under way; `cap`: its `in_all`;
# `task`: the task the thread runs (`grow_task_with_calls`)


class TaskClock(Protocol):
    """The time limit of a task whose calls may be given more time for their size."""

    def call_grown(self, call: CallDeadline, started: float, grown: float) -> None:
        """`call` (started at `started`, `time.monotonic()`) was given `grown` s in all beyond
        its own deadline, and is under way."""

    def call_ended(self, call: CallDeadline) -> None:
        """`call` is over (done, failed, or its stream closed): what it did not use of what it
        was given is no longer the task's."""


def grow_task_with_calls(task: TaskClock | None) -> None:
    """On the thread of a task with a time limit (a worker's item, for the thread's life):
    tell `task` of each call extended for its size (`extend_to`: a transfer given the time its
    bytes take at a minimum rate) and of its end, so the task may wait on the call as long as
    the call itself may take, and no longer once it ended; None: no task to tell."""
    _calls.task = task


@cache
def _watch_new_sockets() -> None:
    """An audit hook (once per process); it only looks at `socket.__new__` in a thread inside
    a watched call."""
    sys.addaudithook(_record_new_socket)


def _record_new_socket(event: str, args: tuple[Any, ...]) -> None:
    if event != "socket.__new__":
        return
    deadline: CallDeadline | None = getattr(_calls, "deadline", None)
    if deadline is None:
        return
    deadline.opened(args[0])
