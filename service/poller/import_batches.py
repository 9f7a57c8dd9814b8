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

from remediation.poller import ImportChunk, RowRef
from remediation.ports import MeterEventSink, ObjectInfo
from remediation.validation import MeterIndex
from service.errors import ItemInterrupted
from service.poller.object_progress import ObjectProgress
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
        before_send: Callable[[int], None] | None = None,
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
class BatchSend:
    """One request of a pass: batch `number`'s events, the rows they came from as recorded,
    its cut, and when rows of it may first have gone out before this pass (`record_group`)."""

    number: int
    events: list[dict[str, object]]
    rows: tuple[RowRef, ...]
    cut: tuple[int, int]  # (first row, rows spanned)
    first_sent: datetime | None = None


def record_group(
    job: ObjectImport,
    obj: ObjectInfo,
    progress: ObjectProgress,
    group: list[ImportChunk],
    numbers: Iterator[int],
    earlier: Callable[[Sequence[RowRef]], datetime | None],
) -> tuple[list[BatchSend], _Recorded]:
    """Record a group's rows and batches before any of it is sent; its requests to send and
    what was recorded. `numbers`: the batch numbers to take, in order (never one Stripe
    acknowledged: `importer._free_numbers`; the rows it billed are left out of every cut,
    `imported_rows.billed`). `earlier`: when rows of a batch may first have gone out before
    this pass, in another cut (the meters changed): the batch is recorded first sent then,
    held to the 23 h horizon from there (recorded first sent on the resume, a batch a recut
    added was sent again a day after its rows first went out)."""
    batches = [chunk for chunk in group if chunk.events]
    spans = [(next(numbers), *_span(chunk)) for chunk in batches]
    job.store.insert_rows(obj, [ref for chunk in group for ref in chunk.rows])
    sent = [tuple(r for r in chunk.rows if r.sent) for chunk in batches]
    before = [earlier(rows) for rows in sent]
    first_sent = {
        span[0]: when for span, when in zip(spans, before, strict=True) if when is not None
    }
    new, same = job.progress.record_sending(progress.object_id, spans, job.clock(), first_sent)
    sends = [
        BatchSend(span[0], chunk.events, rows, span[1:], when)
        for span, chunk, rows, when in zip(spans, batches, sent, before, strict=True)
    ]
    return sends, _Recorded(new, same)


class Acknowledgements:
    """Batches Stripe accepted, written in bulk: every ACK_EVERY seconds or CHUNKS_PER_GROUP
    batches, and at the end, so a crash loses few acknowledgements and a fast stream does
    not pay one transaction per batch."""

    def __init__(self, job: ObjectImport, obj: ObjectInfo, progress: ObjectProgress) -> None:
        self.job, self.obj, self.progress = job, obj, progress
        self.pending: list[int] = []
        self.billed: list[str] = []  # the identifiers the pending batches held
        self.flushed_at = time.monotonic()

    def add(self, number: int, identifiers: Sequence[str] = ()) -> None:
        self.pending.append(number)
        self.billed.extend(identifiers)
        due = time.monotonic() - self.flushed_at >= ACK_EVERY
        if due or len(self.pending) >= CHUNKS_PER_GROUP:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            billed = (self.obj, self.billed)
            self.job.progress.record_acks(
                self.progress.object_id, self.pending, self.job.clock(), billed
            )
            self.pending, self.billed = [], []
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
    before_send: Callable[[int], None] | None = None,
) -> int:
    """Send `batches` through `sink`; `stopping`: the worker is stopping (a sink that takes
    it cuts its retries short: `StripeMeterEventSink.send_batches`); `before_send(i)` raises
    when batch `i` may no longer be sent (a sink that retries asks before every try)."""
    if isinstance(sink, BatchSender):
        return sink.send_batches(batches, on_sent, on_refused, on_wait, stopping, before_send)
    sent = 0
    for index, batch in enumerate(batches):
        if before_send is not None:
            before_send(index)
        try:
            sink.send(batch)
        except Exception as exc:
            if getattr(exc, "permanent", False):
                on_refused(index)
            raise
        on_sent(index)
        sent += len(batch)
    return sent
