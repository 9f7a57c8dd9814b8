"""Importing one object version as meter events, resumably.

Rows are validated against the object's first-seen time (not the clock), so every pass cuts
the file into the same batches. Every group of batches is recorded before it goes out (its
rows in `imported_rows`, its batches with their first send time), and acknowledgements are
written as they come (at least every 0.25 s), so a crash re-sends at most the batches that
were in flight, under the same identifiers; a later pass skips the rows of the acknowledged
prefix (service.poller.progress).
The failed-records file is written afresh on every pass (failed rows are never sent, so
validating them again is free of risk).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from handlers.records import RemediationStatus
from remediation.core.column import Mask
from remediation.core.columns import Batch
from remediation.formats import detect_format
from remediation.poller import ImportChunk, RowNames, RowRef, import_chunks
from remediation.ports import MeterEventSink, ObjectInfo
from remediation.validation import MeterIndex
from service.errors import HorizonPassed
from service.jobs.store.reports import save_poller_import_set
from service.models import ImportSet, ObjectStatus
from service.poller.files import FailedRecords, failed_records_path
from service.poller.object_progress import ObjectProgress, row_was_sent
from service.poller.other_versions import OtherVersions
from service.poller.progress import ProgressStore
from service.poller.store import recordable
from service.poller.versions import PollerStore

CHUNKS_PER_GROUP = 10  # batches recorded before sending, and acknowledgements recorded, at once
ACK_EVERY = 0.25  # seconds: acknowledgements are written at least this often
BEAT_EVERY = 10.0  # seconds between heartbeats during a long import


@runtime_checkable
class BatchSender(Protocol):
    def send_batches(
        self,
        batches: Iterable[Sequence[Mapping[str, Any]]],
        on_sent: Callable[[int], None] | None = None,
        on_refused: Callable[[int], None] | None = None,
    ) -> int: ...


@dataclass
class ImportTally:
    rows: int = 0
    sent: int = 0  # acknowledged on an earlier pass included
    failed: int = 0
    elsewhere: int = 0  # rows sent before, elsewhere (left out: counted in `sent`)


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


def import_object(
    job: ObjectImport, obj: ObjectInfo, impset_id: str, source: Path
) -> tuple[ImportSet, Path]:
    """Send what is left of `obj` (its bytes: `source`, the version's local copy); its import
    set and failed-records file (if any rows failed). Raises HorizonPassed before sending
    anything that may no longer be deduplicated."""
    progress = job.progress.load(obj)
    stale = progress.past_horizon(job.clock())
    if stale:
        raise HorizonPassed(stale)
    fmt = detect_format(obj.key)
    path = failed_records_path(job.work_dir, impset_id, fmt)
    tally = ImportTally()
    skip = job.progress.sent_rows_before(obj, progress.resume_row)
    with source.open("rb") as stream, FailedRecords(path, fmt) as failed_out:
        records = failed_out.open_records(stream)
        reference = int(progress.first_seen.timestamp())
        others = OtherVersions(job.progress, obj, job.clock())
        chunks = import_chunks(
            records,
            job.meters,
            now=reference,
            names=RowNames(obj.key, obj.etag),
            sent_before=_acknowledged(job, obj, skip, progress),
            sent_elsewhere=others.sent,
        )
        # closing: a failure mid-file finishes the readers while their stream is still open
        with closing(chunks):
            _send_all(job, obj, progress, chunks, failed_out, tally, others)
    failed = tally.failed
    import_set = save_poller_import_set(
        job.store.engine,
        impset_id,
        obj.key,
        status="succeeded_with_errors" if failed else "succeeded",
        rows_processed=tally.rows,
        successes_row_count=tally.sent,
        errors_row_count=failed,
        remediation_status=RemediationStatus.PENDING if failed else RemediationStatus.NOT_NEEDED,
        detail={
            "failed_records_path": str(path) if failed else None,
            "etag": obj.etag,
            **({"sent_by_other_versions": tally.elsewhere} if tally.elsewhere else {}),
        },
    )
    job.store.mark_done(
        obj,
        ObjectStatus.IMPORTED,
        rows=tally.rows,
        sent=tally.sent,
        failed=failed,
        import_set_id=impset_id,
    )
    return import_set, path


def _send_all(
    job: ObjectImport,
    obj: ObjectInfo,
    progress: ObjectProgress,
    chunks: Iterator[ImportChunk],
    failed_out: FailedRecords,
    tally: ImportTally,
    others: OtherVersions,
) -> None:
    """One stream of batches through the sink: a batch waiting out a backoff does not hold
    up the next ones. Batch i of this pass is number `acked_batches + i`; one an earlier pass
    had acknowledged past the prefix, cut the same, is left out (`ObjectProgress.
    acknowledged_as`). `unsent.numbers` maps the sink's places to batch numbers."""
    acks = _Acknowledgements(job, progress)
    # batch number -> its rows a run over the object holds in quarantine: marked taken
    # again once Stripe acknowledged the batch
    held: dict[int, list[str]] = {}
    unsent = _Unsent()

    def batches() -> Iterator[list[dict[str, object]]]:
        number, last_beat = progress.acked_batches, time.monotonic()
        while group := list(islice(chunks, CHUNKS_PER_GROUP)):
            sending, recorded = _record_group(job, obj, progress, group, number)
            unsent.recorded |= recorded.new
            unsent.same |= recorded.same
            _note_held(others, group, [(s.number, s.events) for s in sending], held)
            tally.failed += failed_out.write(chunk.failed for chunk in group)
            # rows an earlier pass sent count as rows and as sent (acknowledged then), and so
            # do rows sent before by another object version or as meterfix's correction
            skipped = sum(chunk.skipped + chunk.elsewhere for chunk in group)
            tally.elsewhere += sum(chunk.elsewhere for chunk in group)
            tally.rows += sum(len(chunk.rows) for chunk in group) + skipped
            tally.sent += skipped + recorded.acked_rows
            number += recorded.batches
            for send in sending:
                unsent.numbers.append(send.number)  # the sink takes no batch it does not send
                unsent.late.append(send.late)
                yield send.events
            if time.monotonic() - last_beat >= BEAT_EVERY:
                job.beat()
                last_beat = time.monotonic()

    def acknowledged(index: int) -> None:
        # marked before the acknowledgement is recorded: a crash between the two re-sends the
        # batch on resume (Stripe dedupes it), never leaves a billed row unmarked
        batch_number, late = unsent.numbers[index], unsent.late[index]
        if batch_number in held:
            others.taken_again(held.pop(batch_number))
        if late:  # rows of a batch acknowledged before: recorded as sent once they are
            job.store.insert_rows(obj, [ref._replace(sent=True) for ref in late])
        else:
            acks.add(batch_number)

    def refused(index: int) -> None:
        unsent.refused.append(unsent.numbers[index])

    try:
        # iterating counts skipped rows in tally
        sent = _send(job.sink, batches(), acknowledged, refused)
        tally.sent += sent
    except Exception:
        job.progress.forget_unsent(progress.object_id, unsent.never_billed())
        raise
    finally:
        acks.flush()


def _note_held(
    others: OtherVersions,
    group: list[ImportChunk],
    sending: list[tuple[int, list[dict[str, object]]]],
    held: dict[int, list[str]],
) -> None:
    """Note, by batch number, the rows of each batch of `sending` a run over the object holds
    in quarantine (one query a group)."""
    quarantined = others.held([ref.identifier for c in group for ref in c.rows if ref.sent])
    if not quarantined:
        return
    for number, events in sending:
        found = [str(e["identifier"]) for e in events if e["identifier"] in quarantined]
        if found:
            held[number] = found


class _Unsent:
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

    def never_billed(self) -> set[int]:
        later = self.recorded - set(self.numbers)
        return later | (set(self.refused) & (self.recorded | self.same))


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


def _record_group(
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


class _Acknowledgements:
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
    """(first row, rows spanned) of a batch: resuming after it starts at first + rows."""
    first, last = chunk.rows[0].row_number, chunk.rows[-1].row_number
    return first, last - first + 1


def _send(
    sink: MeterEventSink,
    batches: Iterable[list[dict[str, object]]],
    on_sent: Callable[[int], None],
    on_refused: Callable[[int], None],
) -> int:
    if isinstance(sink, BatchSender):
        return sink.send_batches(batches, on_sent, on_refused)
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


def _acknowledged(
    job: ObjectImport, obj: ObjectInfo, skip: bytearray, progress: ObjectProgress
) -> Callable[[Batch], Mask]:
    """Which of a batch's rows are in the acknowledged prefix and were sent: left out (the
    prefix's failed rows are validated again: they were never sent). A prefix row not
    recorded as sent that repeats the identifier of a row of this version that was (one row
    is recorded per identifier) went out with it and Stripe deduped it then: left out too,
    or a resume a day later bills it."""

    def sent_before(batch: Batch) -> Mask:
        rows = batch.rows
        early = rows < progress.resume_row
        if not early.any():
            return early
        done = early.copy()
        done[early] = [row_was_sent(skip, row) for row in rows[early].tolist()]
        again = np.flatnonzero(early & ~done).tolist()  # failed rows, and repeats
        if again:
            named = batch.identifier.values()
            sent = job.progress.sent_here(obj, [str(named[i]) for i in again])
            for i in again:
                done[i] = named[i] in sent
        return done

    return sent_before
