"""A row past the field limits, or malformed, is never corrected: its reason is the fact."""

from __future__ import annotations

from remediation.changes import Change, Context
from remediation.core.columns import Batch
from remediation.core.rules.base import Fix, one_by_one
from remediation.errors import Uncorrectable
from remediation.records import UsageRecord
from remediation.validation import check_fields


def refuse_field(batch: Batch, ctx: Context) -> Fix:
    return one_by_one(batch, ctx, refuse_field_row)


REPORTED_CHARS = 2000  # of the message a row was reported with, kept as its reason


def refuse_field_row(record: UsageRecord, ctx: Context) -> list[Change]:
    """Our own reason when the row shows it; else what the row was reported with (the
    poller's failed-records file says "row has 6 fields, header has 5; fields past the
    header: [...]" of a row it wrote cut to its header: the cells are in that message)."""
    problem = check_fields(record, ctx.index.limits)
    if problem is not None:
        raise Uncorrectable(problem.message)
    reported = (record.error_message or "").strip()
    raise Uncorrectable(reported[:REPORTED_CHARS] or "the row is past the field limits")
