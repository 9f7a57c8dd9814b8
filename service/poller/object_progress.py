"""What the poller knows of one object version's progress, as values: the batches it sent, the
rows recorded as sent, the acknowledged prefix and the 23 h re-send horizon. Apart from the
queries that read and write them (service.poller.progress), which the importer, retries and
failures need not import to use them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

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


def row_was_sent(bitmap: bytearray, row_number: int) -> bool:
    index = row_number >> 3
    return index < len(bitmap) and bool(bitmap[index] & (1 << (row_number & 7)))
