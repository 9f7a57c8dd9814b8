"""A deadline for a network call in all, where the library making it (botocore) neither has
one nor lets its caller reach the socket it reads from: a per-read timeout never fires on an
answer trickling in a byte at a time. `CallDeadline.watching` lists the sockets the calling
thread opens (an audit hook on `socket.__new__`); at the deadline a timer shuts them down,
the read waiting on one ends at once, and the call raises TimeoutError."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from typing import Any


class CallDeadline:
    """The time a call (or a streamed transfer) may take in all. Past it, a timer shuts down
    `sockets` (the ones the calling thread's client opened: its own, kept across calls, as
    its connection pool keeps them), so the read waiting on one ends at once, and a socket
    the call opens after (botocore retrying) fails as it is made. `what` names the call in
    the TimeoutError's reason."""

    def __init__(self, seconds: float, what: str, sockets: list[socket.socket]) -> None:
        self.seconds, self.what, self.passed = seconds, what, False
        self._sockets = sockets
        self._started = time.monotonic()
        self._timer = self._start(seconds)

    def _start(self, seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, self._hang_up)
        timer.daemon = True
        timer.start()
        return timer

    def extend_to(self, seconds: float) -> None:
        """Allow the call `seconds` in all from its start (a transfer whose size is known
        once it began), unless the deadline passed already."""
        if self.passed or seconds <= self.seconds:
            return
        self._timer.cancel()
        self.seconds = seconds
        self._timer = self._start(max(0.0, self._started + seconds - time.monotonic()))

    def _hang_up(self) -> None:
        self.passed = True
        for sock in list(self._sockets):
            with suppress(OSError):  # closed already, or never connected
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain one, also for TLS

    def cancel(self) -> None:
        self._timer.cancel()

    def opened(self, sock: socket.socket) -> None:
        """A socket the call opens: shut at the deadline; past it, not opened at all."""
        if self.passed:
            raise self.timeout()
        self._sockets.append(sock)

    def timeout(self) -> TimeoutError:
        return TimeoutError(
            f"{self.what}: not done within {self.seconds:g} s (answering too slowly, or not at all)"
        )

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Run the block with the sockets this thread opens in it listed for `_hang_up`; what
        fails in it once the deadline passed is this TimeoutError."""
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


_calls = threading.local()  # `deadline`: the `CallDeadline` of the thread's call under way


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
