"""Importing one object version as meter events, resumably.

Rows are validated against the object's first-seen time (not the clock), so every pass cuts
the file into the same batches. Every group of batches is recorded before it goes out (its
rows in `imported_rows`, its batches with their first send time), and acknowledgements are
written as they come (at least every 0.25 s), so a crash re-sends at most the batches that
were in flight, under the same identifiers; a later pass skips the rows Stripe acknowledged
(service.poller.progress). What Stripe answered is kept per row (`imported_rows.billed`,
`unanswered`), so a pass cutting the rows left into other batches (the meters changed)
neither takes a row that never went out for billed nor sends a billed one again, and holds
the rows that went out before to the horizon of their first send (`EarlierSends`).
The failed-records file is written afresh on every pass (failed rows are never sent, so
validating them again is free of risk), but for rows that fail only now (the meters changed)
in a batch Stripe acknowledged: billed, counted sent (`BatchRows.failed_rows`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from itertools import count, islice
from pathlib import Path
from typing import Any

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
    BatchSend,
    ImportStopped,
    ObjectImport,
    record_group,
    send_batches,
)
from service.poller.object_progress import (
    RESEND_HORIZON,
    BatchRows,
    EarlierSends,
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
    # every row recorded as sent when the pass began (a stop restores those of the batches it
    # forgot: `_BatchStream.forget`); a row Stripe acknowledged is left out, one recorded as
    # sent in a batch that failed is sent again (`_acknowledged`)
    sent_in.sent = job.progress.sent_rows_before(obj, None)
    sent_in.billed, skip = job.progress.billed_rows(obj)
    sent_in.unanswered = job.progress.unanswered_rows(obj)
    with source.open("rb") as stream, failed as failed_out:
        records = failed_out.open_records(stream, job.meters.limits)
        reference = int(progress.first_seen.timestamp())
        others = OtherVersions(job.progress, obj, job.clock())
        chunks = import_chunks(
            records,
            job.meters,
            now=reference,
            names=RowNames(obj.key, obj.etag),
            sent_before=_acknowledged(job, obj, skip, sent_in.billed, progress),
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
    up the next ones. Its batches take the numbers from `acked_batches` on, but for those
    acknowledged past the prefix (`_free_numbers`). `unsent.numbers` maps the sink's places
    to batch numbers."""
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
        stream.forget(stream.unsent.never_billed())
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
        self.acks = Acknowledgements(job, obj, progress)
        # batch number -> the rows it sends, from its recording until Stripe acknowledges it
        self.rows: dict[int, tuple[RowRef, ...]] = {}
        # batch number -> its rows a run over the object holds in quarantine: marked taken
        # again once Stripe acknowledged the batch
        self.held: dict[int, list[tuple[str, int | None]]] = {}
        self.unsent = _Unsent()
        # batches sent before and never acknowledged, by number: their first send times
        self.resent = {batch.number: batch for batch in progress.unacked}
        # numbers of this pass's batches holding rows sent before (`_note_first_sent`)
        self.bounded: set[int] = set()
        self.earlier = EarlierSends(progress, sent_in)
        # those of them held back at the horizon on this pass, by number (`horizon_passed`)
        self.past_horizon: dict[int, SentBatch] = {}
        # batch number -> the batches Stripe never acknowledged in which other versions sent
        # rows of it (object id, batch): held to their horizon too (`OtherVersions.sent`
        # judged them once, as their rows were read)
        self.elsewhere: dict[int, list[tuple[int, SentBatch]]] = {}

    def batches(self, chunks: Iterator[ImportChunk]) -> Iterator[list[dict[str, object]]]:
        """Record each group of chunks, then yield its batches' events to the sink."""
        job, unsent = self.job, self.unsent
        last_beat = time.monotonic()
        numbers = _free_numbers(self.progress)
        while group := self._next_group(chunks):
            sending, recorded = record_group(
                job, self.obj, self.progress, group, numbers, self.earlier.of
            )
            self._note_first_sent(sending)
            unsent.recorded |= recorded.new
            unsent.same |= recorded.same
            events = [(send.number, send.events) for send in sending]
            self.rows.update((send.number, send.rows) for send in sending)
            _note_held(self.others, group, events, self.held)
            self._note_elsewhere(group, events)
            self._count(group)
            for send in sending:
                self._check_stop()  # the group's batches not taken are forgotten (`_send_all`)
                if self._held_at_horizon(send.number) or self._held_elsewhere(send.number):
                    return  # no batch after it: raised once those in flight settle (`_send_all`)
                # another process polls once the lock is lost: it sends this batch, not us
                job.check_lock()
                unsent.numbers.append(send.number)  # the sink takes no batch it does not send
                yield send.events
            if time.monotonic() - last_beat >= BEAT_EVERY:
                job.beat()
                last_beat = time.monotonic()

    def _note_first_sent(self, sending: list[BatchSend]) -> None:
        """Hold the batches of `sending` whose rows may have gone out before this pass to the
        horizon from then (`_held_at_horizon`), as the batches sent before are."""
        for send in sending:
            if send.first_sent is None:
                continue
            self.bounded.add(send.number)
            known = self.resent.get(send.number)
            if known is None or send.first_sent < known.first_sent_at:
                first, rows = send.cut
                self.resent[send.number] = SentBatch(
                    send.number, first, rows, send.first_sent, None
                )

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

    def _count(self, group: list[ImportChunk]) -> None:
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
        tally.sent += skipped + billed

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
        batch_number = self.unsent.numbers[index]
        self.elsewhere.pop(batch_number, None)
        if batch_number in self.held:
            self.others.taken_again(self.held.pop(batch_number))
        # its rows recorded billed with the acknowledgement (`Acknowledgements.flush`)
        self.acks.add(batch_number, [ref.identifier for ref in self.rows.pop(batch_number, ())])

    def forget(self, numbers: set[int]) -> None:
        """Forget the batches of `numbers` (never billed: `_Unsent`), and record their rows
        not sent again where no earlier pass had recorded them sent: left so, a row of a
        batch a stop forgot, failing later, was left out by remediation as sent (neither
        billed nor quarantined). A batch holding rows that went out before in another cut
        stays recorded: its first send time holds them to the horizon (`EarlierSends`); but
        for one Stripe refused as the cut it had refused before (the same rows refused)."""
        held = (numbers & self.bounded) - (set(self.unsent.refused) & self.unsent.same)
        self.job.progress.forget_unsent(self.progress.object_id, numbers - held)
        sent = self.sent_in.sent
        refs = (ref for n in sorted(numbers) for ref in self.rows.get(n, ()))
        fresh = [ref.identifier for ref in refs if not row_was_sent(sent, ref.row_number)]
        self.job.store.mark_not_sent(self.obj, fresh, unanswered=False)

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
        self.recorded: set[int] = set()  # numbers first recorded on this pass
        self.same: set[int] = set()  # recorded before as the same cut, never acknowledged
        self.refused: list[int] = []  # batch numbers

    def never_billed(self) -> set[int]:
        later = self.recorded - set(self.numbers)
        return later | (set(self.refused) & (self.recorded | self.same))


def _free_numbers(progress: ObjectProgress) -> Iterator[int]:
    """The numbers a pass's batches take, in order: from the acknowledged prefix's end, but
    for batches acknowledged past it (their cuts and acknowledgements are what tells which
    rows they billed: never written over)."""
    acked = {batch.number for batch in progress.acked_beyond}
    return (number for number in count(progress.acked_batches) if number not in acked)


def _acknowledged(
    job: ObjectImport,
    obj: ObjectInfo,
    skip: bytearray,
    billed: bytearray,
    progress: ObjectProgress,
) -> Callable[[Batch], Mask]:
    """Which of a batch's rows are in the acknowledged prefix and Stripe acknowledged (`skip`:
    `imported_rows.billed`): left out (the prefix's failed rows are validated again: they
    were never sent; so are rows recorded as sent in a batch that failed, which a pass cut
    into the prefix's span: taken for billed, they were never billed). A prefix row not
    recorded as sent that repeats the identifier of a row of this version that was (one row
    is recorded per identifier) went out with it and Stripe deduped it then: left out too,
    or a resume a day later bills it; unless it fails our checks (`_failing`): never sent,
    it is handed to remediation, which quarantines it (Stripe took its identifier from the
    other row). Left out as sent, `k1` in milliseconds beside a valid `k1` vanished when a
    pass resumed past it. Past the prefix, the rows Stripe acknowledged (`billed`) are left
    out too: a pass cutting the rows into other batches (the meters changed) sent batches
    Stripe had acknowledged again, and found their rows in batches never acknowledged."""
    reference = int(progress.first_seen.timestamp())
    acked = _bits(billed)

    def sent_before(batch: Batch) -> Mask:
        rows = batch.rows
        early = rows < progress.resume_row
        done = np.zeros(len(rows), dtype=bool)
        if len(acked):
            known = ~early & (rows < len(acked))
            done[known] = acked[rows[known]]
        if not early.any():
            return done
        done[early] = [row_was_sent(skip, row) for row in rows[early].tolist()]
        again = np.flatnonzero(early & ~done).tolist()  # failed rows, and repeats
        if again:
            named, row_of = batch.identifier.values(), rows.tolist()
            sent = job.progress.sent_rows_here(obj, [str(named[i]) for i in again])
            # a row recorded as sent itself is left out once Stripe acknowledged it (`skip`)
            repeats = [i for i in again if sent.get(str(named[i]), row_of[i]) != row_of[i]]
            failing = _failing(batch, repeats, job.meters, reference) if repeats else set()
            for i in repeats:
                done[i] = i not in failing
        return done

    return sent_before


def _bits(bitmap: bytearray) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """A `row_was_sent` bitmap as one bool per row number."""
    return np.unpackbits(np.frombuffer(bytes(bitmap), np.uint8), bitorder="little").astype(bool)


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
