"""The writer thread of a run: decided batches written one behind the decider (`WriteBehind`),
and the GIL's switch interval shortened while it runs.

Apart from the run (`engine`) because it is generic over what a batch's write returns and
knows nothing of rows: its ordering, error and shutdown rules are tested on their own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from remediation.core.column import Ahead
from remediation.core.decided import Decided
from remediation.memory import Held

Done = TypeVar("Done")


# The GIL handed over every 0.5 ms while a writer thread runs (Python's default: 5 ms). The
# decider and the writer hand it to each other at every Arrow kernel (a few hundred times a
# batch); a thread that gave it up waited up to the full interval to get it back while the
# other ran Python. 1M CSV rows: 7 % faster (3.48 -> 3.23 s `basic`, 4.61 -> 4.28 s
# `varied`); JSON Lines 0-3 %.
SWITCH_SECONDS = 0.0005
_SHORT_SWITCHES = Held(
    sys.getswitchinterval, sys.setswitchinterval, lambda before: min(SWITCH_SECONDS, before)
)


class WriteBehind(Generic[Done]):
    """Writes decided batches one behind the decider, on a thread of its own: Arrow's kernels
    and the file writes let go of the GIL, so the writing of batch n runs alongside the reading
    and deciding of batch n+1 (1M CSV rows: 3.4 s instead of 3.9 s). `put` hands a batch to
    the writer, then passes what `write` returned for the batch before it to `written` on the
    caller's thread (audit records and progress go to the caller there, in order, while the
    writer writes the next batch); at most two batches are held. An error in `write` is raised
    on the caller's thread, at the next `put` or at the end, and no batch is written after it.
    `threaded=False` writes in place. While the writer runs, the GIL is switched more often
    (`SWITCH_SECONDS`).

    `behind=False` writes in place too, and keeps the thread for work `ahead` only. The
    decider and a writer behind it hand the GIL to each other at every Arrow kernel (about
    40,000 times for 1M CSV rows): each handover is a futex wake and a sleep, and the GIL is
    idle while the woken thread is scheduled. A CSV written as bytes (`CsvOut`) with nobody
    taking its audit records runs faster in place, its next batch made on the thread
    (alternating runs, 1M rows: `varied` 2.96-3.11 s instead of 3.57-3.70 s, `basic`
    2.38-2.42 instead of 2.45-2.61, CPU time 1.0-1.3 s less). JSON Lines (basic 4.0-4.2 s
    behind, 4.4-4.7 in place) and the service's runs (their audit records staged while the
    next batch is written: the remediation and staging 4.2-4.4 s behind, 4.7-4.9 in place)
    keep the writer behind.
    """

    def __init__(
        self,
        write: Callable[[Decided], Done],
        written: Callable[[Done], None],
        threaded: bool,
        behind: bool = True,
    ) -> None:
        self._write, self._written = write, written
        self._pool = ThreadPoolExecutor(1, "meterfix-writer") if threaded else None
        self._behind = threaded and behind
        self._switches: Held[float] | None = None  # held from `__enter__` to `__exit__`
        self._pending: Future[Done] | None = None
        self._failed = False  # a write failed: the writer writes nothing more

    def put(self, decided: Decided) -> None:
        if not self._behind:
            self._written(self._write(decided))
            return
        assert self._pool is not None
        previous, self._pending = self._pending, self._pool.submit(self._in_order, decided)
        if previous is not None:
            self._written(previous.result())

    @property
    def ahead(self) -> Ahead | None:
        """The writer's thread, for work that may wait behind the writing (a CSV's next batch
        is read, parsed and built there: pyarrow and numpy let go of the GIL meanwhile)."""
        return None if self._pool is None else self._pool.submit

    def _in_order(self, decided: Decided) -> Done:
        if self._failed:
            raise _AfterFailure
        try:
            return self._write(decided)
        except BaseException:
            self._failed = True
            raise

    def wait(self) -> None:
        """Until every batch given is written (the first error raised here)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._written(pending.result())

    def __enter__(self) -> WriteBehind[Done]:
        if self._behind:
            self._switches = _SHORT_SWITCHES
            self._switches.__enter__()
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        try:
            if error is None:
                self.wait()
        finally:  # on an error: the batch being written ends before the outputs are aborted
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            if self._switches is not None:
                self._switches.__exit__()
                self._switches = None


class _AfterFailure(Exception):
    """A batch not written because the one before it failed (that error is raised first)."""
