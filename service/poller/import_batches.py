"""The batches of one object's import: each group recorded before it goes out
(`record_group`), sent through the sink (`send_batches`), and Stripe's acknowledgements
written in bulk (`Acknowledgements`); with `ObjectImport`, what an import needs. Apart from
`importer.py`, which reads the object and streams its batches through these.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from remediation.poller import ImportChunk, RowRef
from remediation.ports import MeterEventSink, ObjectInfo
from remediation.validation import MeterIndex
from service.errors import ItemInterrupted
from service.poller.object_progress import BatchRows, ObjectProgress, row_was_sent
from service.poller.progress import ProgressStore
from service.poller.versions import PollerStore

CHUNKS_PER_GROUP = 10  # batches recorded before sending, and acknowledgements recorded, at once
ACK_EVERY = 0.25  # seconds: acknowledgements are written at least this often


@runtime_checkable
class BatchSender(Protocol):
    def send_batches(
        self,
        batches: Iterable[Sequence[Mapping[str, Any]]],
        on_sent: Callable[[int], None] | None = None,
        on_refused: Callable[[int], None] | None = None,
        on_wait: Callable[[], None] | None = None,
        stopping: Callable[[], bool] | None = None,
    ) -> int: ...


@dataclass
class ObjectImport:
    """Everything one object's import needs (built by service.poller.pass_objects for each
    object)."""

    store: PollerStore
    progress: ProgressStore
    sink: MeterEventSink
    meters: MeterIndex
    work_dir: Path
    clock: Callable[[], datetime]
    beat: Callable[[], None] = lambda: None
    stopping: Callable[[], bool] = lambda: False  # the worker is stopping: send no more
    # raises `LockLost` once the poller lock is lost (`HeldLock.check`): send no more
    check_lock: Callable[[], None] = lambda: None


class ImportStopped(ItemInterrupted):
    """The poller was asked to stop mid-import: no batch went out after it, those in flight
    settled and their acknowledgements were recorded; the next pass resumes after them."""


@dataclass(frozen=True, slots=True)
class _Recorded:
    new: set[int]  # batch numbers recorded for the first time
    same: set[int]  # recorded before as the same cut, never acknowledged


@dataclass(frozen=True, slots=True)
class Send:
    """One request of a pass: batch `number`'s events; `late`: its rows that a batch Stripe
    acknowledged before spans (they failed our checks then and are valid now), recorded as
    sent once Stripe takes them."""

    number: int
    events: list[dict[str, object]]
    late: tuple[RowRef, ...] = ()
    carried: tuple[RowRef, ...] = ()  # the rows of its events
    span: tuple[int, int] = (0, 0)  # (first row, rows spanned)
    # the earliest first send of the rows it carries that went out before without answer
    earlier: datetime | None = None


def record_group(
    job: ObjectImport,
    obj: ObjectInfo,
    progress: ObjectProgress,
    group: list[ImportChunk],
    cut: tuple[BatchRows, Iterator[int]],
) -> tuple[list[Send], _Recorded]:
    """Record a group's rows and batches before any of it is sent; its requests to send and
    what was recorded. `cut`: what the batches recorded before say of the rows (a batch is
    cut around the rows sent without answer it spans) and the numbers to give the batches.
    A row a batch Stripe acknowledged spans is recorded as sent only once this send of it is
    acknowledged (recorded before, a failure would leave it counted billed)."""
    rows, numbers = cut
    batches = [piece for chunk in group if chunk.events for piece in rows.pieces(chunk)]
    spans = [(next(numbers), *_span(chunk)) for chunk in batches]
    earlier = [rows.first_sent(chunk) for chunk in batches]
    carried = [ref for chunk in batches for ref in chunk.rows if ref.sent]
    acked = rows.acknowledged(np.array([ref.row_number for ref in carried], np.int64))
    late = {ref.row_number for ref, spanned in zip(carried, acked, strict=True) if spanned}
    refs = [ref for chunk in group for ref in chunk.rows]
    if late:
        refs = [ref._replace(sent=False) if ref.row_number in late else ref for ref in refs]
    job.store.insert_rows(obj, refs)
    new, same = job.progress.record_sending(progress.object_id, spans, job.clock(), earlier)
    parts = zip(spans, batches, earlier, strict=True)
    sends = [_send(span, chunk, late, first) for span, chunk, first in parts]
    return sends, _Recorded(new, same)


def _send(
    span: tuple[int, int, int], chunk: ImportChunk, late: set[int], earlier: datetime | None
) -> Send:
    """The request of batch (number, first row, rows) `span`: its events, the rows they are
    and those of them `late`."""
    carried = tuple(ref for ref in chunk.rows if ref.sent)
    lately = tuple(r for r in carried if r.row_number in late)
    number, first, rows = span
    return Send(number, chunk.events, lately, carried, (first, rows), earlier)


class Unsent:
    """Which batches of a pass that stopped were never billed: recorded on it for the first
    time and never taken by the sink (`numbers` are those it took, in order), or refused by
    Stripe (HTTP 400: nothing of the request taken), recorded on this pass or, as the same
    cut and never acknowledged, on an earlier one (the same rows refused: a fixed version of
    the file must send them, not count them delivered a day later)."""

    def __init__(self) -> None:
        self.numbers: list[int] = []  # the sink's places -> batch numbers
        self.late: list[tuple[RowRef, ...]] = []  # the sink's places -> late rows sent there
        self.recorded: set[int] = set()  # numbers first recorded on this pass
        self.same: set[int] = set()  # recorded before as the same cut, never acknowledged
        self.refused: list[int] = []  # batch numbers
        self.pending: dict[int, Send] = {}  # recorded on this pass, never acknowledged

    def never_billed(self) -> set[int]:
        later = self.recorded - set(self.numbers)
        return later | (set(self.refused) & (self.recorded | self.same))

    def rows_of(self, numbers: set[int], sent: bytearray) -> list[str]:
        """The rows to record as not sent of batches never billed (`never_billed`): those one
        carried that were not recorded as sent before the pass (`sent`: their bitmap), and
        every row of one refused as the same cut recorded before (the same rows refused:
        never billed then either). A row recorded as sent that no acknowledged batch spans
        counts as sent without answer."""
        found: list[str] = []
        for send in (self.pending[n] for n in sorted(numbers) if n in self.pending):
            again = send.number in self.same
            found += [
                r.identifier for r in send.carried if again or not row_was_sent(sent, r.row_number)
            ]
        return found


class Acknowledgements:
    """Batches Stripe accepted, written in bulk: every ACK_EVERY seconds or CHUNKS_PER_GROUP
    batches, and at the end, so a crash loses few acknowledgements and a fast stream does
    not pay one transaction per batch."""

    def __init__(self, job: ObjectImport, progress: ObjectProgress) -> None:
        self.job, self.progress = job, progress
        self.pending: list[int] = []
        self.flushed_at = time.monotonic()

    def add(self, number: int) -> None:
        self.pending.append(number)
        due = time.monotonic() - self.flushed_at >= ACK_EVERY
        if due or len(self.pending) >= CHUNKS_PER_GROUP:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.job.progress.record_acks(self.progress.object_id, self.pending, self.job.clock())
            self.pending = []
        self.flushed_at = time.monotonic()


def _span(chunk: ImportChunk) -> tuple[int, int]:
    """(first row, rows spanned) of a batch: resuming after it starts at first + rows (the
    rows it spans, its unsent rows handed on before it included)."""
    assert chunk.span is not None  # a batch has events, so rows
    first, last = chunk.span
    return first, last - first + 1


def send_batches(
    sink: MeterEventSink,
    batches: Iterable[list[dict[str, object]]],
    on_sent: Callable[[int], None],
    on_refused: Callable[[int], None],
    on_wait: Callable[[], None] | None = None,
    stopping: Callable[[], bool] | None = None,
) -> int:
    """Send `batches` through `sink`; `stopping`: the worker is stopping (a sink that takes
    it cuts its retries short: `StripeMeterEventSink.send_batches`)."""
    if isinstance(sink, BatchSender):
        return sink.send_batches(batches, on_sent, on_refused, on_wait, stopping)
    sent = 0
    for index, batch in enumerate(batches):
        try:
            sink.send(batch)
        except Exception as exc:
            if getattr(exc, "permanent", False):
                on_refused(index)
            raise
        on_sent(index)
        sent += len(batch)
    return sent
