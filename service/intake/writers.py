"""The one registry of the webhook INSERT's writers: one per engine, per process.

A writer is made on first use in the process that uses it (never before a fork) and closed
when its engine is disposed; a forked child makes its own and never closes its parent's
(closing would disturb the parent's locks or end its session on a shared socket).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Engine, event


class Writer(Protocol):
    pid: int

    def commit_one(self, sql: str, parameters: tuple[Any, ...]) -> None: ...

    def close(self) -> None: ...


W = TypeVar("W", bound=Writer)


class WriterRegistry(Generic[W]):
    """Writers of one kind: `applies` says which engines get one, `make` makes it (or None)."""

    def __init__(self, applies: Callable[[Engine], bool], make: Callable[[Engine], W | None]):
        self._applies, self._make = applies, make
        self._writers: weakref.WeakKeyDictionary[Engine, W] = weakref.WeakKeyDictionary()
        self._guard = threading.Lock()
        self._inherited: list[W] = []  # a parent's writers, never closed in a child

    def get(self, engine: Engine) -> W | None:
        """This process's writer for `engine`; None for engines of another kind."""
        writer = self._writers.get(engine)
        if writer is not None and writer.pid == os.getpid():
            return writer
        if not self._applies(engine):
            return None
        with self._guard:
            writer = self._writers.get(engine)
            if writer is not None and writer.pid == os.getpid():
                return writer
            fresh = self._make(engine)
            if fresh is None:
                return None
            if writer is not None:
                self._inherited.append(writer)
            else:
                event.listen(engine, "engine_disposed", self._close)
            self._writers[engine] = fresh
        return fresh

    def _close(self, engine: Engine) -> None:
        writer = self._writers.get(engine)
        if writer is not None and writer.pid == os.getpid():
            del self._writers[engine]
            writer.close()
