"""What the poller knows of one object version's progress, as values: the batches it sent, the
rows recorded as sent, the acknowledged prefix and the 23 h re-send horizon. Apart from the
queries that read and write them (service.poller.progress), which the importer, retries and
failures need not import to use them."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from remediation.codes import ErrorCode
from remediation.poller import ImportChunk
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
    # past the prefix, acknowledged (in flight beside a batch that failed): a pass cutting
    # the same batch again leaves it out (`acknowledged_as`), never sends it a second time
    acked_beyond: tuple[SentBatch, ...] = ()
    # when the acknowledged prefix last grew (Stripe took the batches a pass resumes after)
    prefix_grown_at: datetime | None = None

    def acknowledged_as(self, number: int, first_row: int, rows: int) -> bool:
        """Whether batch `number`, cut as (first_row, rows), was acknowledged past the prefix
        as that same cut (its rows billed: sending it again a day later bills them twice)."""
        return any(
            (b.number, b.first_row, b.rows) == (number, first_row, rows) for b in self.acked_beyond
        )

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

    def acknowledged(self, row: int) -> bool:
        return _within(self.acked, row) and row_was_sent(self.sent, row)

    def unacknowledged(self, row: int) -> bool:
        return _within(self.unacked, row) and row_was_sent(self.sent, row)

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
