"""What the poller knows of one object version's progress, as values: the batches it sent, the
rows recorded as sent, the acknowledged prefix and the 23 h re-send horizon. Apart from the
queries that read and write them (service.poller.progress), which the importer, retries and
failures need not import to use them."""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import count
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from remediation.codes import ErrorCode
from remediation.core.column import Mask
from remediation.poller import ImportChunk
from remediation.records import UsageRecord

# Stripe dedupes identifiers for a rolling period of at least 24 hours; nothing is sent again
# past this much after its first send without an operator's `poll --retry KEY --yes`.
RESEND_HORIZON = timedelta(hours=23)


@dataclass(frozen=True, slots=True)
class SentBatch:
    number: int
    first_row: int
    rows: int  # file rows the batch spans (rows that failed validation included)
    first_sent_at: datetime
    acked_at: datetime | None


class SentRow(NamedTuple):
    """A row of an object version recorded as sent (`imported_rows.sent`)."""

    identifier: str
    object_id: int
    row_number: int


@dataclass(slots=True)
class ObjectProgress:
    object_id: int
    first_seen: datetime  # the reference time validation uses on every pass of this object
    acked_batches: int = 0
    resume_row: int = 0  # the row the acknowledged prefix's furthest batch ends at
    failing_since: datetime | None = None
    attempts: int = 0
    unacked: tuple[SentBatch, ...] = ()  # sent, never acknowledged: a pass sends them again
    # past the prefix, acknowledged (in flight beside a batch that failed): their numbers are
    # never given to another cut, their rows recorded as sent never sent again
    acked_beyond: tuple[SentBatch, ...] = ()
    # when the acknowledged prefix last grew (Stripe took the batches a pass resumes after)
    prefix_grown_at: datetime | None = None
    # (first row, end) of every batch Stripe acknowledged, the prefix's included
    acked_spans: tuple[tuple[int, int], ...] = ()

    def resumes_at(self) -> int:
        """The first row a retry may send: where the acknowledged prefix ends, or before it
        where a batch never acknowledged starts (a resume cut a batch around rows failing
        then, numbered past those acknowledged: the prefix grew over the rows it spans)."""
        return min([self.resume_row, *(b.first_row for b in self.unacked)])

    def oldest_resend(self) -> datetime | None:
        return min((b.first_sent_at for b in self.unacked), default=None)

    def past_horizon(self, now: datetime) -> tuple[SentBatch, ...]:
        """Batches a pass would send again although first sent more than 23 h ago."""
        return tuple(b for b in self.unacked if b.first_sent_at <= now - RESEND_HORIZON)

    def free_numbers(self) -> Iterator[int]:
        """The numbers a pass gives its batches: from the prefix on, but those of batches
        acknowledged past it (their record, cut and acknowledgement, is never written over:
        a later pass learns from it which rows Stripe billed)."""
        taken = {b.number for b in self.acked_beyond}
        return (n for n in count(self.acked_batches) if n not in taken)


def row_was_sent(bitmap: bytearray, row_number: int) -> bool:
    index = row_number >> 3
    return index < len(bitmap) and bool(bitmap[index] & (1 << (row_number & 7)))


class BatchRows:
    """What the batches recorded before a pass say of a row (`sent`: `row_was_sent`'s bitmap
    of the version's rows recorded as sent): billed when recorded as sent and a batch Stripe
    acknowledged spans it; sent once without Stripe's answer when recorded as sent and no
    such batch spans it, or when a batch Stripe acknowledged spans it and one sent since,
    never acknowledged, does too, whatever it is recorded as (a row that failed our checks
    then and went later, `late`: recorded as sent only once that batch is acknowledged).
    An acknowledged batch spans no row recorded as sent that it did not carry, and a batch
    spans no row it did not carry where one acknowledged does: batches are cut around those
    rows (`pieces`), and around the rows sent without answer failing now (held).
    A row billed is left out of a pass, counted sent; one sent without answer that fails our
    checks now is handed to remediation as `sent_without_answer` (`failed_rows`), and a batch
    that carries one valid now keeps the earliest first send of those it carries
    (`first_sent`: the 23 h horizon counts from there)."""

    def __init__(self, progress: ObjectProgress, sent: bytearray) -> None:
        self.spans = _union(progress.acked_spans)
        self.starts = np.array([first for first, _ in self.spans], np.int64)
        self.ends = np.array([end for _, end in self.spans], np.int64)
        self.sent = sent
        # (first row, end, first send) of the batches sent before the pass, never acknowledged
        self.unanswered = [
            (b.first_row, b.first_row + b.rows, b.first_sent_at) for b in progress.unacked
        ]
        # rows no batch of the pass spans, sorted: those sent without answer failing on this
        # pass (`held`), and the failed ones an acknowledged batch spans
        self.cuts: list[int] = []

    def acknowledged(self, rows: npt.NDArray[np.int64]) -> Mask:
        """Which of `rows` a batch Stripe acknowledged spans (those recorded as sent are
        billed; one sent now is recorded as sent once this send is acknowledged: recorded
        before, a failure of it would leave the row counted billed)."""
        if not len(self.starts):
            return np.zeros(len(rows), bool)
        at = np.searchsorted(self.starts, rows, side="right") - 1
        return (at >= 0) & (rows < self.ends[np.maximum(at, 0)])

    def without_answer(self, row: int) -> bool:
        if not _within(self.spans, row):
            return row_was_sent(self.sent, row)
        return any(first <= row < end for first, end, _ in self.unanswered)

    def first_sent(self, chunk: ImportChunk) -> datetime | None:
        """The earliest first send of the rows sent without answer `chunk`'s batch carries
        (None: none), by the batches recorded before that span them: a batch cut anew under a
        number never sent before holds rows that went out then, and counted from its own send,
        the horizon let them go again past Stripe's 24 h dedupe."""
        if not self.unanswered:
            return None  # the common case: nothing sent before waits for an answer
        rows = [ref.row_number for ref in chunk.rows if ref.sent]
        return min(
            (
                when
                for row in rows
                if self.without_answer(row)
                for first, end, when in self.unanswered
                if first <= row < end
            ),
            default=None,
        )

    def failed_rows(self, group: list[ImportChunk]) -> tuple[list[UsageRecord], list[str]]:
        """The failed rows of a pass's chunks to hand to remediation, and the identifiers of
        those sent without answer (`held`: recorded as sent, remediation would leave them out
        as billed: neither sent nor quarantined; recorded as not sent once the import is
        done); those and the failed rows an acknowledged batch spans are noted in `cuts`."""
        failed: list[UsageRecord] = []
        unsent: list[str] = []
        for chunk in group:
            refs = [ref for ref in chunk.rows if not ref.sent]  # one per failed row, in order
            for ref, record in zip(refs, chunk.failed, strict=True):
                row, unanswered = ref.row_number, self.without_answer(ref.row_number)
                if unanswered:
                    unsent.append(ref.identifier)
                    record = _maybe_billed(record)
                if unanswered or _within(self.spans, row):
                    insort(self.cuts, row)
                failed.append(record)
        return failed, unsent

    def pieces(self, chunk: ImportChunk) -> list[ImportChunk]:
        """`chunk`'s batch cut around the rows of `cuts` it spans: one piece of events for each
        stretch between them (a batch spanning a row sent without answer and then
        acknowledged would count it billed; one spanning a failed row an acknowledged batch
        spans, never acknowledged, would count it sent without answer)."""
        assert chunk.span is not None  # a batch has events, so rows
        first, last = chunk.span
        inside = self.cuts[bisect_left(self.cuts, first) : bisect_right(self.cuts, last)]
        if not inside:
            return [chunk]
        carried = [ref for ref in chunk.rows if ref.sent]  # one per event, in order
        pieces: dict[int, ImportChunk] = {}
        for ref, event in zip(carried, chunk.events, strict=True):
            at = bisect_left(inside, ref.row_number)
            start = inside[at - 1] + 1 if at else first
            end = inside[at] - 1 if at < len(inside) else last
            piece = pieces.setdefault(at, ImportChunk(span=(start, end)))
            piece.events.append(event)
            piece.rows.append(ref)
        return [pieces[at] for at in sorted(pieces)]


def _maybe_billed(record: UsageRecord) -> UsageRecord:
    """A failing row of a batch never acknowledged, as remediation gets it: quarantined for an
    operator who checks Stripe (the row's own problem kept in the reason)."""
    problem = f" ({record.error_code}: {record.error_message})" if record.error_code else ""
    message = (
        f"sent to Stripe once in a batch never acknowledged, and failing our checks now"
        f"{problem}: Stripe may have billed it; check before sending it again"
    )
    return replace(record, error_code=ErrorCode.SENT_WITHOUT_ANSWER.value, error_message=message)


def _within(spans: list[tuple[int, int]], row: int) -> bool:
    """Whether `row` lies in one of `spans` ((first, end) pairs sorted by first row, apart)."""
    i = bisect_right(spans, row, key=lambda span: span[0]) - 1
    return i >= 0 and row < spans[i][1]


def _union(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """(first, end) spans merged where they overlap or touch, by first row."""
    merged: list[tuple[int, int]] = []
    for first, end in sorted(spans):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((first, end))
    return merged
