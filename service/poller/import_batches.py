"""The batches of one object's import: each group recorded before it goes out
(`record_group`), sent through the sink (`send_batches`), and Stripe's acknowledgements
written in bulk (`Acknowledgements`); with `ObjectImport`, what an import needs. Apart from
`importer.py`, which reads the object and streams its batches through these.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
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
from service.poller.store import recordable
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
    batches: int  # numbers the group took (sent or left out)
    acked_rows: int  # events of the batches left out: acknowledged on an earlier pass


@dataclass(frozen=True, slots=True)
class _Send:
    """One request of a pass: batch `number`'s events; or, for a batch an earlier pass had
    acknowledged past the prefix, cut the same, its rows that pass never sent (`late`: they
    failed validation then and are valid now), recorded as sent once Stripe takes them."""

    number: int
    events: list[dict[str, object]]
    late: tuple[RowRef, ...] = ()


def record_group(
    job: ObjectImport,
    obj: ObjectInfo,
    progress: ObjectProgress,
    group: list[ImportChunk],
    number: int,
) -> tuple[list[_Send], _Recorded]:
    """Record a group's rows and batches before any of it is sent; its requests to send and
    what was recorded. A batch an earlier pass had acknowledged past the prefix, cut the
    same, is neither recorded nor sent again, but for its rows that pass never sent (only a
    file's last, partial batch keeps its cut when a row of it that failed is valid now: the
    meter made meanwhile): sent by themselves, their rows recorded as sent once acknowledged
    (a failure leaves them to the next pass; recorded as sent before, inside a batch
    acknowledged before, they would count as billed)."""
    batches = [chunk for chunk in group if chunk.events]
    spans = [(number + i, *_span(chunk)) for i, chunk in enumerate(batches)]
    left = {i for i, span in enumerate(spans) if progress.acknowledged_as(*span)}
    late = _late_rows(job, obj, [batches[i] for i in sorted(left)])
    refs = [ref for chunk in group for ref in chunk.rows]
    if late:
        refs = [ref._replace(sent=False) if ref.identifier in late else ref for ref in refs]
    job.store.insert_rows(obj, refs)
    sending = [span for i, span in enumerate(spans) if i not in left]
    new, same = job.progress.record_sending(progress.object_id, sending, job.clock())
    sends: list[_Send] = []
    acked_rows = 0
    for i, span in enumerate(spans):
        events = batches[i].events
        if i not in left:
            sends.append(_Send(span[0], events))
            continue
        again = [e for e in events if e["identifier"] in late]
        acked_rows += len(events) - len(again)
        if again:
            rows = tuple(r for r in batches[i].rows if r.sent and r.identifier in late)
            sends.append(_Send(span[0], again, rows))
    return sends, _Recorded(new, same, len(spans), acked_rows)


def _late_rows(job: ObjectImport, obj: ObjectInfo, chunks: list[ImportChunk]) -> set[str]:
    """The identifiers of these batches' events (batches an earlier pass had acknowledged)
    that were never recorded as sent: rows that failed validation on that pass. Looked up
    before this pass records its rows (an identifier the table cannot hold counts as sent:
    no look-up can tell, and sending it again could bill it twice)."""
    named = [str(e["identifier"]) for chunk in chunks for e in chunk.events]
    known = [i for i in named if recordable(i)]
    if not known:
        return set()
    return set(known) - job.progress.sent_here(obj, known)


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
