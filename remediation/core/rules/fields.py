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


def refuse_field_row(record: UsageRecord, ctx: Context) -> list[Change]:
    problem = check_fields(record, ctx.index.limits)
    raise Uncorrectable(problem.message if problem else "the row is past the field limits")
