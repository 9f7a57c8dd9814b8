"""Importing one object version as meter events, resumably.

Rows are validated against the object's first-seen time (not the clock), so every pass cuts
the file into the same batches. Every group of batches is recorded before it goes out (its
rows in `imported_rows`, its batches with their first send time), and acknowledgements are
written as they come (at least every 0.25 s), so a crash re-sends at most the batches that
were in flight, under the same identifiers; a later pass skips the rows of the acknowledged
prefix (service.poller.progress).
The failed-records file is written afresh on every pass (failed rows are never sent, so
validating them again is free of risk), but for rows that fail only now (the meters changed)
in a batch Stripe acknowledged: billed, counted sent (`BatchRows.failed_rows`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from handlers.records import RemediationStatus
from remediation.core.checks import problem_ids
from remediation.core.column import Mask
from remediation.core.columns import Batch
from remediation.formats import detect_format
from remediation.poller import ImportChunk, RowRef, import_chunks
from remediation.ports import ObjectInfo
from remediation.rownames import RowNames
from remediation.validation import MeterIndex, validate_record
from service.db.locks import LockLost
from service.errors import HorizonPassed, MeterEventSendError
from service.jobs.store.reports import save_poller_import_set
from service.models import ImportSet, ObjectStatus
from service.poller.files import FailedRecords, discard_failed_records, failed_records_path
from service.poller.import_batches import (
    CHUNKS_PER_GROUP,
    Acknowledgements,
    ImportStopped,
    ObjectImport,
    record_group,
    send_batches,
)
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
    path = failed_records_path(job.work_dir, job.store.engine, impset_id, fmt)
    try:
        tally = _import_rows(job, obj, progress, source, FailedRecords(path, fmt))
        job.check_lock()  # lost: the next holder records the import, not this pass too
    except BaseException:
        discard_failed_records(path)  # no import set records it: no reader will come
        raise
    try:
        import_set = _record_import_set(job, obj, impset_id, path, tally)
    except LockLost:  # the fence, first in its transaction: nothing saved
        discard_failed_records(path)
        raise
    # the file kept from here: a save failing otherwise may have committed (the connection
    # dropped during COMMIT), and one whose lock drops now is recorded (the next pass records
    # its own over it); recorded by none, `clear_unrecorded_files` deletes it
    _mark_imported(job, obj, impset_id, tally)
    return import_set, path


def _import_rows(
    job: ObjectImport,
    obj: ObjectInfo,
    progress: ObjectProgress,
    source: Path,
    failed: FailedRecords,
) -> ImportTally:
    """Send the rows of `source` left to send, the failed ones written to `failed`."""
    tally = ImportTally()
    sent_in = BatchRows(progress)
    skip = sent_in.sent = job.progress.sent_rows_before(obj, sent_in.end)
    with source.open("rb") as stream, failed as failed_out:
        records = failed_out.open_records(stream, job.meters.limits)
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
            try:
                _send_all(job, obj, progress, chunks, failed_out, tally, others, sent_in)
            finally:  # the alerts of the runs whose rows it marked, once (not a batch)
                others.settle_alerts()
    return tally


def _record_import_set(
    job: ObjectImport, obj: ObjectInfo, impset_id: str, path: Path, tally: ImportTally
) -> ImportSet:
    """Save the object's import set from the tally, fenced: a pass whose lock dropped just
    after its last `check_lock`, going on late, saved it over the one the next pass had
    recorded (its own file and counts), and the next pass's file was then recorded nowhere."""
    failed = tally.failed
    return save_poller_import_set(
        job.store.engine,
        impset_id,
        obj.key,
        fence=job.store.fence,
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


def _mark_imported(job: ObjectImport, obj: ObjectInfo, impset_id: str, tally: ImportTally) -> None:
    """The object imported, after its import set (fenced too: `PollerStore`)."""
    job.store.mark_done(
        obj,
        ObjectStatus.IMPORTED,
        rows=tally.rows,
        sent=tally.sent,
        failed=tally.failed,
        import_set_id=impset_id,
    )


def _send_all(
    job: ObjectImport,
    obj: ObjectInfo,
    progress: ObjectProgress,
    chunks: Iterator[ImportChunk],
    failed_out: FailedRecords,
    tally: ImportTally,
    others: OtherVersions,
    sent_in: BatchRows,
) -> None:
    """One stream of batches through the sink: a batch waiting out a backoff does not hold
    up the next ones. Batch i of this pass is number `acked_batches + i`; one an earlier pass
    had acknowledged past the prefix, cut the same, is left out (`ObjectProgress.
    acknowledged_as`). `unsent.numbers` maps the sink's places to batch numbers."""
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
            stream.check_horizon,
        )
        if (passed := stream.horizon_passed()) is not None:
            raise passed
        tally.sent += sent
    except LockLost:
        # another pass may be sending the object now: nothing more is recorded (the
        # batches recorded and never acknowledged are sent again under the same identifiers)
        raise
    except Exception as exc:
        job.progress.forget_unsent(progress.object_id, stream.unsent.never_billed())
        if job.stopping() and not isinstance(exc, ImportStopped):
            # the sink cut a batch's retries short (or left it unsent): it stays
            # unacknowledged, sent again by the next start under the same identifiers
            raise ImportStopped(f"{obj.key}: the poller was asked to stop mid-import") from exc
        if isinstance(exc, MeterEventSendError) and (passed := stream.horizon_passed(exc)):
            raise passed from exc  # both: the object is given up on each
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
        self.held: dict[int, list[tuple[str, int | None]]] = {}
        self.unsent = _Unsent()
        # batches sent before and never acknowledged, by number: their first send times
        self.resent = {batch.number: batch for batch in progress.unacked}
        # those of them held back at the horizon on this pass, by number (`horizon_passed`)
        self.past_horizon: dict[int, SentBatch] = {}
        # batch number -> the batches Stripe never acknowledged in which other versions sent
        # rows of it (object id, batch): held to their horizon too (`OtherVersions.sent`
        # judged them once, as their rows were read)
        self.elsewhere: dict[int, list[tuple[int, SentBatch]]] = {}

    def batches(self, chunks: Iterator[ImportChunk]) -> Iterator[list[dict[str, object]]]:
        """Record each group of chunks, then yield its batches' events to the sink."""
        job, unsent = self.job, self.unsent
        number, last_beat = self.progress.acked_batches, time.monotonic()
        while group := self._next_group(chunks):
            sending, recorded = record_group(job, self.obj, self.progress, group, number)
            unsent.recorded |= recorded.new
            unsent.same |= recorded.same
            events = [(send.number, send.events) for send in sending]
            _note_held(self.others, group, events, self.held)
            self._note_elsewhere(group, events)
            self._count(group, recorded.acked_rows)
            number += recorded.batches
            for send in sending:
                self._check_stop()  # the group's batches not taken are forgotten (`_send_all`)
                if self._held_at_horizon(send.number) or self._held_elsewhere(send.number):
                    return  # no batch after it: raised once those in flight settle (`_send_all`)
                # another process polls once the lock is lost: it sends this batch, not us
                job.check_lock()
                unsent.numbers.append(send.number)  # the sink takes no batch it does not send
                unsent.late.append(send.late)
                yield send.events
            if time.monotonic() - last_beat >= BEAT_EVERY:
                job.beat()
                last_beat = time.monotonic()

    def _note_elsewhere(
        self, group: list[ImportChunk], sending: list[tuple[int, list[dict[str, object]]]]
    ) -> None:
        """Note which of the group's batches hold rows other versions sent in batches Stripe
        never acknowledged (`elsewhere`)."""
        for number, events in sending:
            ids = (str(event["identifier"]) for event in events)
            if senders := self.others.sent_again_in(ids):
                self.elsewhere[number] = senders
        self.others.cut(ref.identifier for chunk in group for ref in chunk.rows)

    def _next_group(self, chunks: Iterator[ImportChunk]) -> list[ImportChunk]:
        """The next chunks; none once rows another version sent past the horizon are read
        (`OtherVersions.sent` noted them): the stream ends as at a batch held there, and
        the batches in flight settle (raised from the generator, the failure of one was lost)."""
        self._check_stop()
        try:
            return list(islice(chunks, CHUNKS_PER_GROUP))
        except HorizonPassed:
            if self.others.horizon_passed() is None:
                raise
            return []

    def _check_stop(self) -> None:
        """Raise ImportStopped at a batch boundary once the worker is stopping: the sink
        takes no further batch and settles those in flight (SIGTERM mid-import kept the
        process sending until the supervisor killed it)."""
        if self.job.stopping():
            raise ImportStopped(f"{self.obj.key}: the poller was asked to stop mid-import")

    def _count(self, group: list[ImportChunk], acked_rows: int) -> None:
        """Count a group's rows in the tally, writing its failed ones to the failed records."""
        tally = self.tally
        # rows failing now (the meters changed) in a batch Stripe acknowledged were billed:
        # left out; in one it never acknowledged: handed over, recorded as not sent
        failed, billed, unsent = self.sent_in.failed_rows(group)
        self.job.store.mark_not_sent(self.obj, unsent)
        tally.failed += self.failed_out.write([failed])
        # rows an earlier pass sent count as rows and as sent (acknowledged then), and so
        # do rows sent before by another object version or as meterfix's correction
        skipped = sum(chunk.skipped + chunk.elsewhere for chunk in group)
        tally.elsewhere += sum(chunk.elsewhere for chunk in group)
        tally.rows += sum(len(chunk.rows) for chunk in group) + skipped
        tally.sent += skipped + acked_rows + billed

    def check_horizon(self, index: int) -> None:
        """Before every request of the sink's batch `index`, its retries included: checked
        only as a batch was taken, one first sent 22 h 59 min before was sent again after
        minutes of backoff (429s as Stripe recovered), past the horizon."""
        number = self.unsent.numbers[index]
        if self._held_at_horizon(number):
            raise HorizonPassed([self.past_horizon[number]])
        if (passed := self._held_elsewhere(number)) is not None:
            raise passed

    def _held_at_horizon(self, number: int) -> bool:
        """Whether batch `number` was sent before, never acknowledged, and first sent more
        than 23 h ago (checked once when the pass began, a long pass sent such batches past
        it): noted, it is left unacknowledged and the object given up on (`horizon_passed`)."""
        before = self.resent.get(number)
        if before is None or before.first_sent_at > self.job.clock() - RESEND_HORIZON:
            return False
        self.past_horizon[number] = before
        return True

    def _held_elsewhere(self, number: int) -> HorizonPassed | None:
        """HorizonPassed when batch `number` holds rows another version sent in a batch Stripe
        never acknowledged, first sent more than 23 h ago (noted by `others`)."""
        return self.others.check_horizon(self.elsewhere.get(number, ()), self.job.clock())

    def horizon_passed(self, failure: MeterEventSendError | None = None) -> HorizonPassed | None:
        """The batches held at the horizon on this pass, with what Stripe failed another batch
        with beside them (the sink raises that first): raising only the first failure, a
        batch given up through a lasting outage hid one past the horizon, whose rows a retry
        may bill twice, from the alert. None when no batch was held. This version's batches
        come before other versions' (HorizonPassed names one sender): `poll --retry KEY
        --yes` decides on both when those are earlier versions of the key; another key's
        are held again, and named, on the pass after it."""
        held = [self.past_horizon[number] for number in sorted(self.past_horizon)]
        if held:
            return HorizonPassed(held, failure=failure)
        return self.others.horizon_passed(failure)

    def acknowledged(self, index: int) -> None:
        """Stripe acknowledged the sink's batch `index`."""
        # marked before the acknowledgement is recorded: a crash between the two re-sends the
        # batch on resume (Stripe dedupes it), never leaves a billed row unmarked
        batch_number, late = self.unsent.numbers[index], self.unsent.late[index]
        self.elsewhere.pop(batch_number, None)
        if batch_number in self.held:
            self.others.taken_again(self.held.pop(batch_number))
        if late:  # rows of a batch acknowledged before: recorded as sent once they are
            self.job.store.insert_rows(self.obj, [ref._replace(sent=True) for ref in late])
        else:
            self.acks.add(batch_number)

    def refused(self, index: int) -> None:
        """Stripe refused the sink's batch `index` (HTTP 400)."""
        self.unsent.refused.append(self.unsent.numbers[index])


def _note_held(
    others: OtherVersions,
    group: list[ImportChunk],
    sending: list[tuple[int, list[dict[str, object]]]],
    held: dict[int, list[tuple[str, int | None]]],
) -> None:
    """Note, by batch number, the rows of each batch of `sending` a run over the object holds
    in quarantine (one query a group), with the timestamps the group sends them at."""
    quarantined = others.held([ref.identifier for c in group for ref in c.rows if ref.sent])
    if not quarantined:
        return
    stamps: dict[str, set[int | None]] = {}
    for ref in (ref for c in group for ref in c.rows if ref.sent):
        if ref.identifier in quarantined:
            stamps.setdefault(ref.identifier, set()).add(ref.timestamp)
    for number, events in sending:
        ids = [str(e["identifier"]) for e in events if e["identifier"] in quarantined]
        found = [(i, s) for i in ids for s in sorted(stamps.get(i, {None}), key=str)]
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


def _acknowledged(
    job: ObjectImport, obj: ObjectInfo, skip: bytearray, progress: ObjectProgress
) -> Callable[[Batch], Mask]:
    """Which of a batch's rows are in the acknowledged prefix and were sent: left out (the
    prefix's failed rows are validated again: they were never sent). A prefix row not
    recorded as sent that repeats the identifier of a row of this version that was (one row
    is recorded per identifier) went out with it and Stripe deduped it then: left out too,
    or a resume a day later bills it; unless it fails our checks (`_failing`): never sent,
    it is handed to remediation, which quarantines it (Stripe took its identifier from the
    other row). Left out as sent, `k1` in milliseconds beside a valid `k1` vanished when a
    pass resumed past it."""
    reference = int(progress.first_seen.timestamp())

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
            repeats = [i for i in again if named[i] in sent]
            failing = _failing(batch, repeats, job.meters, reference) if repeats else set()
            for i in repeats:
                done[i] = i not in failing
        return done

    return sent_before


def _failing(batch: Batch, rows: list[int], meters: MeterIndex, now: int) -> set[int]:
    """Which of `rows` (places in `batch`) fail our checks, as `import_chunks` checks them."""
    picked = batch.take(np.asarray(rows, np.int64))
    odd = np.flatnonzero(problem_ids(picked, meters, now))
    records = picked.take(odd).records()
    return {
        rows[i]
        for i, record in zip(odd.tolist(), records, strict=True)
        if validate_record(record, meters, now) is not None
    }
