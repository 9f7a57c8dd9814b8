"""A deadline on reading a request body: at it, the client's socket is shut for reading, so
a read blocked on a client dripping a byte at a time (or sending nothing) returns at once.
One watchdog thread serves every request of the process (a timer a request cost a thread
start on the webhook's hot path); a request done in time costs a heap entry."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class _Watchdog:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._live: set[int] = set()
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, client: socket.socket, deadline: float) -> int:
        with self._cond:
            ticket = next(self._count)
            heapq.heappush(self._heap, (deadline, ticket, client))
            self._live.add(ticket)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="meterfix-read-deadline", daemon=True
                )
                self._thread.start()
            if self._heap[0][1] == ticket:  # the watchdog waits for a later one, or none:
                self._cond.notify()  # else it wakes for the earlier one anyway (no switch)
            return ticket

    def done(self, ticket: int) -> None:
        with self._cond:
            self._live.discard(ticket)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)  # done in time
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, ticket, client = self._heap[0]
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
                self._live.discard(ticket)
                # under the lock `done` takes: shut before the request's read ended, or never
                # (after, the connection may be reading its next request)
                with contextlib.suppress(OSError):  # gone already
                    client.shutdown(socket.SHUT_RD)


_WATCHDOG = _Watchdog()


@contextmanager
def read_deadline(client: object, seconds: float) -> Iterator[None]:
    """Within the block, reads from `client` (a socket; anything else: no deadline) end at
    the deadline: the socket is shut for reading (its answer can still be written)."""
    if not isinstance(client, socket.socket):
        yield
        return
    ticket = _WATCHDOG.watch(client, time.monotonic() + seconds)
    try:
        yield
    finally:
        _WATCHDOG.done(ticket)
