"""What the poller knows of one object version's progress, as values: the batches it sent, the
rows recorded as sent, the acknowledged prefix and the 23 h re-send horizon. Apart from the
queries that read and write them (service.poller.progress), which the importer, retries and
failures need not import to use them."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np

from remediation.codes import ErrorCode
from remediation.poller import ImportChunk, RowRef
from remediation.records import UsageRecord

# Stripe dedupes identifiers for a rolling period of at least 24 hours; nothing is sent again
# past this much after its first send without an operator's `poll --retry KEY --yes`.
RESEND_HORIZON = timedelta(hours=23)
MAX_SPANS_SHOWN = 5  # row spans described; the count of rows covers them all


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
    content: int | None = None  # `remediation.rowdigest` of what it sent (None: not known)


@dataclass(slots=True)
class ObjectProgress:
    object_id: int
    first_seen: datetime  # the reference time validation uses on every pass of this object
    acked_batches: int = 0
    resume_row: int = 0  # rows before this one belong to the acknowledged prefix
    failing_since: datetime | None = None
    attempts: int = 0
    unacked: tuple[SentBatch, ...] = ()  # sent, never acknowledged: a pass sends them again
    # past the prefix, acknowledged (in flight beside a batch that failed): a pass numbers
    # its batches past them, never cutting them again (their rows billed: left out)
    acked_beyond: tuple[SentBatch, ...] = ()
    # when the acknowledged prefix last grew (Stripe took the batches a pass resumes after)
    prefix_grown_at: datetime | None = None

    def oldest_resend(self) -> datetime | None:
        return min((b.first_sent_at for b in self.unacked), default=None)

    def past_horizon(self, now: datetime) -> tuple[SentBatch, ...]:
        """Batches a pass would send again although first sent more than 23 h ago."""
        return tuple(b for b in self.unacked if b.first_sent_at <= now - RESEND_HORIZON)


def describe_batches(batches: tuple[SentBatch, ...]) -> str:
    """`2 batches (rows 501 to 600 and 1501 to 1600: 200 rows, first sent ... UTC)`: the rows
    each batch spans (the acknowledged ones between them are not sent again); what `poll
    --retry` prints and the gave-up alert names."""
    spans = _row_spans(batches)
    shown = " and ".join(f"{first} to {last}" for first, last in spans[:MAX_SPANS_SHOWN])
    more = f" and {len(spans) - MAX_SPANS_SHOWN} more spans" if len(spans) > MAX_SPANS_SHOWN else ""
    rows = sum(last - first + 1 for first, last in spans)
    first = min(b.first_sent_at for b in batches).astimezone(UTC)  # PostgreSQL: session's zone
    last = max(b.first_sent_at for b in batches).astimezone(UTC)
    when = f"{first:%Y-%m-%d %H:%M:%S}" + (f" to {last:%Y-%m-%d %H:%M:%S}" if last != first else "")
    count = f"{len(batches)} batch" + ("es" if len(batches) != 1 else "")
    return f"{count} (rows {shown}{more}: {rows} rows, first sent {when} UTC)"


def _row_spans(batches: tuple[SentBatch, ...]) -> list[tuple[int, int]]:
    """(first row, last row) of the batches, adjacent ones merged."""
    spans: list[tuple[int, int]] = []
    for batch in sorted(batches, key=lambda b: b.first_row):
        first, last = batch.first_row, batch.first_row + batch.rows - 1
        if spans and first <= spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], max(spans[-1][1], last))
        else:
            spans.append((first, last))
    return spans


def row_was_sent(bitmap: bytearray, row_number: int) -> bool:
    index = row_number >> 3
    return index < len(bitmap) and bool(bitmap[index] & (1 << (row_number & 7)))


class BatchRows:
    """Which batch, by the cuts recorded before a pass, holds a row recorded as sent (`sent`:
    `row_was_sent`'s bitmap of the version's sent rows up to `end`): one acknowledged past the
    prefix (billed: such a row failing validation now is counted sent, never handed to
    remediation as failed) or one never acknowledged (never known billed: such a row failing
    now is handed to remediation, no longer recorded as sent)."""

    def __init__(self, progress: ObjectProgress) -> None:
        self.acked = sorted((b.first_row, b.first_row + b.rows) for b in progress.acked_beyond)
        self.unacked = sorted((b.first_row, b.first_row + b.rows) for b in progress.unacked)
        ends = [end for _, end in self.acked + self.unacked]
        self.end = max([progress.resume_row, *ends])
        self.sent = bytearray()
        self.billed = bytearray()  # rows Stripe acknowledged (`imported_rows.billed`)
        self.unanswered = bytearray()  # handed over as sent without answer before

    def acknowledged(self, row: int) -> bool:
        in_acked = _within(self.acked, row) and row_was_sent(self.sent, row)
        return in_acked or row_was_sent(self.billed, row)

    def unacknowledged(self, row: int) -> bool:
        """Sent in a batch never acknowledged: on this pass's cuts, or on an earlier pass
        that handed it over as sent without answer (it stays so: a recut since may have put
        it in no batch, and `sent` was cleared then)."""
        in_unacked = _within(self.unacked, row) and row_was_sent(self.sent, row)
        return in_unacked or row_was_sent(self.unanswered, row)

    def failed_rows(self, group: list[ImportChunk]) -> tuple[list[UsageRecord], int, list[str]]:
        """The failed rows of a pass's chunks to hand to remediation; how many were left out
        as billed (in a batch acknowledged past the prefix: handed over, a rule could send
        them again under new identifiers); and the identifiers of those handed over from a
        batch never acknowledged (recorded as sent there, remediation would leave them out
        as billed: neither sent nor quarantined)."""
        failed: list[UsageRecord] = []
        unsent: list[str] = []
        billed = 0
        for chunk in group:
            refs = [ref for ref in chunk.rows if not ref.sent]  # one per failed row, in order
            for ref, record in zip(refs, chunk.failed, strict=True):
                if self.acknowledged(ref.row_number):
                    billed += 1
                    continue
                if self.unacknowledged(ref.row_number):
                    unsent.append(ref.identifier)
                    record = _maybe_billed(record)
                failed.append(record)
        return failed, billed, unsent


class EarlierSends:
    """When the rows a pass sends may first have gone out before it: recorded as sent when it
    began (in a batch never acknowledged: the acknowledged ones are left out), or handed over
    as sent without answer since. Which batch sent such a row is not kept row by row, but
    each pass records the batch that holds it (its span covers the row) first sent no later
    than the earliest batch never acknowledged whose span covers it then: that one, by
    induction never later than the row's first send. A batch a recut adds (a number no pass
    had recorded) was recorded first sent on the resume, and a pass 23 h after the row's first
    send sent it again. `poll --retry KEY --yes` drops the batches past the horizon: their
    rows count from the new send, as the operator decided."""

    def __init__(self, progress: ObjectProgress, rows: BatchRows) -> None:
        self.rows = rows
        self.unacked = sorted(progress.unacked, key=lambda batch: batch.first_sent_at)
        self._earliest: np.ndarray[Any, np.dtype[np.int64]] | None = None

    def of(self, refs: Sequence[RowRef]) -> datetime | None:
        """The first send time of a batch holding `refs`, when rows of it may have gone out
        before this pass; None when none did."""
        sent, unanswered = self.rows.sent, self.rows.unanswered
        numbers = [
            ref.row_number
            for ref in refs
            if row_was_sent(sent, ref.row_number) or row_was_sent(unanswered, ref.row_number)
        ]
        if not numbers or not self.unacked:
            return None
        earliest = self._by_row()
        found = [int(earliest[n]) for n in numbers if n < len(earliest)]
        # a row no batch covers (recorded before migration 0020): the oldest of them all
        return self.unacked[min(found, default=0)].first_sent_at

    def _by_row(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Per row number, the place in `unacked` of the earliest batch covering it."""
        if self._earliest is None:
            end = max(b.first_row + b.rows for b in self.unacked)
            earliest = np.full(end, 0, dtype=np.int64)
            covered = np.zeros(end, dtype=bool)
            for place, batch in enumerate(self.unacked):  # earliest first: kept
                span = slice(batch.first_row, batch.first_row + batch.rows)
                earliest[span] = np.where(covered[span], earliest[span], place)
                covered[span] = True
            self._earliest = earliest
        return self._earliest


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
    """Whether `row` lies in one of `spans` ((first, end) pairs sorted by first row)."""
    i = bisect_right(spans, row, key=lambda span: span[0]) - 1
    return i >= 0 and row < spans[i][1]
