"""Importing one object version as meter events, resumably.

Rows are validated against the object's first-seen time (not the clock), so every pass cuts
the file into the same batches. Every group of batches is recorded before it goes out (its
rows in `imported_rows`, its batches with their first send time), and acknowledgements are
written as they come (at least every 0.25 s), so a crash re-sends at most the batches that
were in flight, under the same identifiers; a later pass skips the rows of the acknowledged
prefix (service.poller.progress).
The failed-records file is written afresh on every pass (failed rows are never sent, so
validating them again is free of risk); a row a batch Stripe acknowledged carried is never
validated again (billed, counted sent), and one sent without Stripe's answer that fails now
is handed over as such (`BatchRows`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path

import numpy as np

from handlers.records import RemediationStatus
from remediation.core.column import Mask
from remediation.core.columns import Batch
from remediation.formats import detect_format
from remediation.poller import ImportChunk, import_chunks
from remediation.ports import ObjectInfo
from remediation.rownames import RowNames
from service.db.locks import LockLost
from service.errors import HorizonPassed
from service.jobs.store.reports import save_poller_import_set
from service.models import ImportSet
from service.poller.files import FailedRecords, failed_records_path
from service.poller.import_batches import (
    CHUNKS_PER_GROUP,
    Acknowledgements,
    ImportStopped,
    ObjectImport,
    Send,
    Unsent,
    record_group,
    send_batches,
)
from service.poller.imported_rows import not_sent
from service.poller.object_progress import (
    RESEND_HORIZON,
    BatchRows,
    ObjectProgress,
    SentBatch,
    row_was_sent,
)
from service.poller.other_versions import OtherVersions

BEAT_EVERY = 10.0  # seconds between heartbeats during a long import


@dataclass
class ImportTally:
    rows: int = 0
    sent: int = 0  # acknowledged on an earlier pass included
    failed: int = 0
    elsewhere: int = 0  # rows sent before, elsewhere (left out: counted in `sent`)


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
    sent_in = BatchRows(progress, job.progress.sent_rows(obj))
    with source.open("rb") as stream, FailedRecords(path, fmt) as failed_out:
        records = failed_out.open_records(stream, job.meters.limits)
        reference = int(progress.first_seen.timestamp())
        others = OtherVersions(job.progress, obj, job.clock())
        chunks = import_chunks(
            records,
            job.meters,
            now=reference,
            names=RowNames(obj.key, obj.etag),
            sent_before=_acknowledged(job, obj, sent_in),
            sent_elsewhere=others.sent,
        )
        # closing: a failure mid-file finishes the readers while their stream is still open
        with closing(chunks):
            held = _send_all(job, obj, progress, chunks, failed_out, tally, others, sent_in)
    job.check_lock()  # lost: the next holder records the import, not this pass too
    return _record_imported(job, obj, impset_id, path, tally, held), path


def _record_imported(
    job: ObjectImport,
    obj: ObjectInfo,
    impset_id: str,
    path: Path,
    tally: ImportTally,
    held: list[str],
) -> ImportSet:
    """Save the object's import set from the tally, and mark the object imported. `held`:
    rows sent without answer, handed over, recorded as not sent as it is marked (recorded as
    sent until then, so that a pass failing first leaves the next one knowing they went out:
    it hands them over as sent without answer too)."""
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
    job.store.mark_imported(
        obj,
        held,
        rows=tally.rows,
        sent=tally.sent,
        failed=failed,
        import_set_id=impset_id,
    )
    return import_set


def _send_all(
    job: ObjectImport,
    obj: ObjectInfo,
    progress: ObjectProgress,
    chunks: Iterator[ImportChunk],
    failed_out: FailedRecords,
    tally: ImportTally,
    others: OtherVersions,
    sent_in: BatchRows,
) -> list[str]:
    """One stream of batches through the sink: a batch waiting out a backoff does not hold
    up the next ones. The batches of this pass are numbered from the prefix on, past the
    numbers of batches acknowledged after it (`ObjectProgress.free_numbers`); `unsent.
    numbers` maps the sink's places to batch numbers. The identifiers of the rows sent
    without answer handed over."""
    stream = _BatchStream(job, obj, progress, failed_out, tally, others, sent_in)
    try:
        # iterating counts skipped rows in tally
        # a beat while batches back off too (a Stripe incident: minutes without one raised
        # the critical "no poller heartbeat" alert about a poller alive and retrying)
        sent = send_batches(
            job.sink,
            stream.batches(chunks),
            stream.acknowledged,
            stream.refused,
            job.beat,
            job.stopping,
        )
        tally.sent += sent
        return stream.without_answer
    except LockLost:
        # another pass may be sending the object now: nothing more is recorded (the
        # batches recorded and never acknowledged are sent again under the same identifiers)
        raise
    except Exception as exc:
        never = stream.unsent.never_billed()
        rows = not_sent(obj, stream.unsent.rows_of(never, sent_in.sent), job.store.engine)
        job.progress.forget_unsent(progress.object_id, never, rows)
        if job.stopping() and not isinstance(exc, ImportStopped):
            # the sink cut a batch's retries short (or left it unsent): it stays
            # unacknowledged, sent again by the next start under the same identifiers
            raise ImportStopped(f"{obj.key}: the poller was asked to stop mid-import") from exc
        raise
    finally:
        stream.acks.flush()  # fenced: lost, the lock raises LockLost instead


class _BatchStream:
    """The batches of one pass as the sink takes them, and what it answers for each: the
    acknowledgements to record, the rows held in quarantine to mark, the batches never billed."""

    def __init__(
        self,
        job: ObjectImport,
        obj: ObjectInfo,
        progress: ObjectProgress,
        failed_out: FailedRecords,
        tally: ImportTally,
        others: OtherVersions,
        sent_in: BatchRows,
    ) -> None:
        self.job, self.obj, self.progress = job, obj, progress
        self.failed_out, self.tally, self.others = failed_out, tally, others
        self.sent_in = sent_in
        self.acks = Acknowledgements(job, progress)
        # batch number -> its rows a run over the object holds in quarantine: marked taken
        # again once Stripe acknowledged the batch
        self.held: dict[int, list[str]] = {}
        self.unsent = Unsent()
        self.without_answer: list[str] = []  # rows sent without answer, handed over

    def batches(self, chunks: Iterator[ImportChunk]) -> Iterator[list[dict[str, object]]]:
        """Record each group of chunks, then yield its batches' events to the sink."""
        job, unsent = self.job, self.unsent
        numbers, last_beat = self.progress.free_numbers(), time.monotonic()
        # batches sent before and never acknowledged: checked against the horizon as each
        # goes out again (checked once when the pass began, a long pass sent them past it)
        resent = {batch.number: batch for batch in self.progress.unacked}
        while group := self._next_group(chunks):
            self._count(group)  # notes the rows sent without answer the batches are cut around
            cut = (self.sent_in, numbers)
            sending, recorded = record_group(job, self.obj, self.progress, group, cut)
            unsent.recorded |= recorded.new
            unsent.same |= recorded.same
            unsent.pending.update((send.number, send) for send in sending)
            _note_held(self.others, group, [(s.number, s.events) for s in sending], self.held)
            for send in sending:
                self._check_stop()  # the group's batches not taken are forgotten (`_send_all`)
                _check_horizon(send, resent.get(send.number), job.clock())
                # another process polls once the lock is lost: it sends this batch, not us
                job.check_lock()
                unsent.numbers.append(send.number)  # the sink takes no batch it does not send
                unsent.late.append(send.late)
                yield send.events
            if time.monotonic() - last_beat >= BEAT_EVERY:
                job.beat()
                last_beat = time.monotonic()

    def _next_group(self, chunks: Iterator[ImportChunk]) -> list[ImportChunk]:
        self._check_stop()
        return list(islice(chunks, CHUNKS_PER_GROUP))

    def _check_stop(self) -> None:
        """Raise ImportStopped at a batch boundary once the worker is stopping: the sink
        takes no further batch and settles those in flight (SIGTERM mid-import kept the
        process sending until the supervisor killed it)."""
        if self.job.stopping():
            raise ImportStopped(f"{self.obj.key}: the poller was asked to stop mid-import")

    def _count(self, group: list[ImportChunk]) -> None:
        """Count a group's rows in the tally, writing its failed ones to the failed records."""
        tally = self.tally
        failed, unsent = self.sent_in.failed_rows(group)
        self.without_answer += unsent
        tally.failed += self.failed_out.write([failed])
        # rows an earlier pass sent count as rows and as sent (acknowledged then), and so
        # do rows sent before by another object version or as meterfix's correction
        skipped = sum(chunk.skipped + chunk.elsewhere for chunk in group)
        tally.elsewhere += sum(chunk.elsewhere for chunk in group)
        tally.rows += sum(len(chunk.rows) for chunk in group) + skipped
        tally.sent += skipped

    def acknowledged(self, index: int) -> None:
        """Stripe acknowledged the sink's batch `index`."""
        # marked before the acknowledgement is recorded: a crash between the two re-sends the
        # batch on resume (Stripe dedupes it), never leaves a billed row unmarked
        batch_number, late = self.unsent.numbers[index], self.unsent.late[index]
        self.unsent.pending.pop(batch_number, None)
        if batch_number in self.held:
            self.others.taken_again(self.held.pop(batch_number))
        if late:  # rows an acknowledged batch spans: recorded as sent once they are billed
            self.job.store.insert_rows(self.obj, [ref._replace(sent=True) for ref in late])
        self.acks.add(batch_number)

    def refused(self, index: int) -> None:
        """Stripe refused the sink's batch `index` (HTTP 400)."""
        self.unsent.refused.append(self.unsent.numbers[index])


def _check_horizon(send: Send, before: SentBatch | None, now: datetime) -> None:
    """Raise HorizonPassed if `send` carries rows first sent more than 23 h ago: sent before
    under its number (`before`), or cut from a batch sent before under another
    (`Send.earlier`: a piece cut around rows failing now went out under a new number, and
    the check by number alone sent its rows again 44 h after their first send)."""
    firsts = [when for when in (send.earlier, before and before.first_sent_at) if when]
    if firsts and min(firsts) <= now - RESEND_HORIZON:
        first, rows = send.span
        raise HorizonPassed([SentBatch(send.number, first, rows, min(firsts), None)])


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


def _acknowledged(
    job: ObjectImport, obj: ObjectInfo, sent_in: BatchRows
) -> Callable[[Batch], Mask]:
    """Which of a batch's rows a batch Stripe acknowledged carried: left out, billed (the
    rows such a batch spans that failed our checks then are validated again: they were never
    sent). A row it spans, not recorded as sent, that repeats the identifier of a row of
    this version that was (one row is recorded per identifier) went out with it and Stripe
    deduped it then: left out too, or a resume a day later bills it."""

    def sent_before(batch: Batch) -> Mask:
        rows = batch.rows
        early = sent_in.acknowledged(rows)
        if not early.any():
            return early
        done = early.copy()
        done[early] = [row_was_sent(sent_in.sent, row) for row in rows[early].tolist()]
        again = np.flatnonzero(early & ~done).tolist()  # failed rows, and repeats
        if again:
            named = batch.identifier.values()
            sent = job.progress.sent_here(obj, [str(named[i]) for i in again])
            for i in again:
                done[i] = named[i] in sent
        return done

    return sent_before
