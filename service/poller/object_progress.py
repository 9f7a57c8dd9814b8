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
    """What the batches recorded before a pass say of a row recorded as sent (`sent`:
    `row_was_sent`'s bitmap of the version's rows recorded as sent): billed when a batch
    Stripe acknowledged spans it, sent once without Stripe's answer otherwise (a batch that
    failed: Stripe may have taken it). An acknowledged batch spans no row recorded as sent
    that it did not carry: a row it spans that a later batch carries is recorded as sent once
    that one is acknowledged (`late`), and no batch is cut over a row sent without answer
    (`held`: its batches are cut around it, `pieces`).
    A row billed is left out of a pass, counted sent; one sent without answer that fails our
    checks now is handed to remediation as `sent_without_answer` (`failed_rows`)."""

    def __init__(self, progress: ObjectProgress, sent: bytearray) -> None:
        self.spans = _union(progress.acked_spans)
        self.starts = np.array([first for first, _ in self.spans], np.int64)
        self.ends = np.array([end for _, end in self.spans], np.int64)
        self.sent = sent
        self.held: list[int] = []  # rows sent without answer failing on this pass, sorted

    def acknowledged(self, rows: npt.NDArray[np.int64]) -> Mask:
        """Which of `rows` a batch Stripe acknowledged spans (those recorded as sent are
        billed; one sent now is recorded as sent once this send is acknowledged: recorded
        before, a failure of it would leave the row counted billed)."""
        if not len(self.starts):
            return np.zeros(len(rows), bool)
        at = np.searchsorted(self.starts, rows, side="right") - 1
        return (at >= 0) & (rows < self.ends[np.maximum(at, 0)])

    def without_answer(self, row: int) -> bool:
        return row_was_sent(self.sent, row) and not _within(self.spans, row)

    def failed_rows(self, group: list[ImportChunk]) -> tuple[list[UsageRecord], list[str]]:
        """The failed rows of a pass's chunks to hand to remediation, and the identifiers of
        those sent without answer (recorded as sent, remediation would leave them out as
        billed: neither sent nor quarantined; recorded as not sent once the import is done),
        noted in `held`."""
        failed: list[UsageRecord] = []
        unsent: list[str] = []
        for chunk in group:
            refs = [ref for ref in chunk.rows if not ref.sent]  # one per failed row, in order
            for ref, record in zip(refs, chunk.failed, strict=True):
                if self.without_answer(ref.row_number):
                    unsent.append(ref.identifier)
                    insort(self.held, ref.row_number)
                    record = _maybe_billed(record)
                failed.append(record)
        return failed, unsent

    def pieces(self, chunk: ImportChunk) -> list[ImportChunk]:
        """`chunk`'s batch cut around the rows sent without answer it spans (`held`): one
        piece of events for each stretch between them (a batch spanning one and then
        acknowledged would count it billed)."""
        assert chunk.span is not None  # a batch has events, so rows
        first, last = chunk.span
        inside = self.held[bisect_left(self.held, first) : bisect_right(self.held, last)]
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
