"""Timestamp rules: ms/µs/ns to seconds, ISO-8601 to seconds, a small future skew clamped;
usage older than the 35-day window is never moved (another billing period).

Timestamps of up to 18 digits are computed on the whole column in numpy; anything else (ISO
text, a JSON float, more digits) goes through `fix_timestamp_row`, the same steps for one row.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from remediation.changes import Change, Context
from remediation.core.checks import short_digits
from remediation.core.columns import Batch, Column, Indexes, Kind
from remediation.core.rules.base import Changes, Fix, one_by_one, set_column
from remediation.errors import Uncorrectable
from remediation.limits import MAX_ISO_TEXT, shown
from remediation.records import UsageRecord
from remediation.validation import MAX_FUTURE_SECONDS, MAX_PAST_SECONDS, parse_timestamp, utc_text

UNITS = ((10**9, "ns"), (10**6, "µs"), (10**3, "ms"))
# (at least, divisor, unit): what a too-large timestamp is read as, in a reason
READINGS = (
    (10**17, 10**9, "nanoseconds"),
    (10**14, 10**6, "microseconds"),
    (10**11, 10**3, "milliseconds"),
)
NEVER_MOVED = "never move usage into another billing period; quarantined for review"


def fix_timestamp(batch: Batch, ctx: Context) -> Fix:
    """ms/µs/ns -> seconds; ISO-8601 -> seconds; a small future skew -> clamped to now."""
    column = batch.timestamp
    short = short_digits(column).copy()
    if column.kinds is not None:
        short &= (column.kinds == Kind.TEXT) | (column.kinds == Kind.INT)
    fix = one_by_one(batch, ctx, fix_timestamp_row, np.flatnonzero(~short))
    at = np.flatnonzero(short)
    if not len(at):
        return fix
    raw = column.text.take(pa.array(at)).cast(pa.int64()).to_numpy(zero_copy_only=False)
    ts = raw.astype(np.int64).copy()
    changes: list[Changes] = []
    if ctx.rules.enabled("timestamp_units"):
        ts = _from_units(ts, at, ctx, changes)
    ts = _clamped(ts, at, ctx, changes, fix)
    old = ts < ctx.now - MAX_PAST_SECONDS
    fix.fail(at[old], [past_reason(int(t), ctx.now) for t in ts[old].tolist()])
    kinds = column.kinds[at] if column.kinds is not None else None
    new = Column(pa.array(ts).cast(pa.string()), kinds)
    fix.batch = fix.batch.with_fields(timestamp=set_column(fix.batch.timestamp, at, new))
    fix.changes.extend(changes)
    return fix


def _from_units(
    ts: npt.NDArray[np.int64], at: Indexes, ctx: Context, changes: list[Changes]
) -> npt.NDArray[np.int64]:
    ahead = ts > ctx.now + MAX_FUTURE_SECONDS
    low, high = ctx.now - MAX_PAST_SECONDS, ctx.now + ctx.rules.policy.future_skew_seconds
    for divisor, unit in UNITS:
        seconds = ts // divisor
        hit = ahead & (seconds >= low) & (seconds <= high)
        if hit.any():
            rule = f"timestamp_{unit}_to_s"
            changes.append(_change(rule, at[hit], ts[hit], seconds[hit]))
            ts = np.where(hit, seconds, ts)
            ahead &= ~hit
    return ts


def _clamped(
    ts: npt.NDArray[np.int64], at: Indexes, ctx: Context, changes: list[Changes], fix: Fix
) -> npt.NDArray[np.int64]:
    ahead = ts > ctx.now + MAX_FUTURE_SECONDS
    if not ahead.any():
        return ts
    allowed = ctx.rules.enabled("clamp_skew")
    far = ahead & ((ts - ctx.now > ctx.rules.policy.future_skew_seconds) | (not allowed))
    fix.fail(at[far], [future_reason(int(t), ctx) for t in ts[far].tolist()])
    clamp = ahead & ~far
    if clamp.any():
        now = np.full(int(clamp.sum()), ctx.now, np.int64)
        changes.append(_change("clamp_skew", at[clamp], ts[clamp], now))
    return np.where(ahead, ctx.now, ts)


def _change(
    rule: str, at: Indexes, before: npt.NDArray[np.int64], after: npt.NDArray[np.int64]
) -> Changes:
    def ints(values: npt.NDArray[np.int64]) -> Column:
        return Column(pa.array(values).cast(pa.string()), np.full(len(values), Kind.INT, np.uint8))

    return Changes(at, rule, "timestamp", ints(before), ints(after))


def fix_timestamp_row(record: UsageRecord, ctx: Context) -> list[Change]:
    """`fix_timestamp` for one row of any shape."""
    raw, changes = record.timestamp, []
    ts = parse_timestamp(raw)
    if ts is None:
        ts = _iso_seconds(raw) if ctx.rules.enabled("iso_timestamp") else None
        if ts is None:
            raise Uncorrectable(f"timestamp {shown(raw)} is neither unix seconds nor ISO-8601")
        changes.append(Change("iso_timestamp", "timestamp", raw, ts))
    if ts > ctx.now + MAX_FUTURE_SECONDS and ctx.rules.enabled("timestamp_units"):
        for divisor, unit in UNITS:
            seconds = ts // divisor
            if (
                ctx.now - MAX_PAST_SECONDS
                <= seconds
                <= ctx.now + ctx.rules.policy.future_skew_seconds
            ):
                changes.append(Change(f"timestamp_{unit}_to_s", "timestamp", ts, seconds))
                ts = seconds
                break
    if ts > ctx.now + MAX_FUTURE_SECONDS:
        skew = ts - ctx.now
        if skew > ctx.rules.policy.future_skew_seconds or not ctx.rules.enabled("clamp_skew"):
            raise Uncorrectable(future_reason(ts, ctx))
        changes.append(Change("clamp_skew", "timestamp", ts, ctx.now))
        ts = ctx.now
    if ts < ctx.now - MAX_PAST_SECONDS:
        raise Uncorrectable(past_reason(ts, ctx.now))
    record.timestamp = str(ts) if isinstance(raw, str) else ts
    return changes


def future_reason(ts: int, ctx: Context) -> str:
    """Why a timestamp that no unit or clamp brings into the window is quarantined: what it
    was read as and the window, as dates (never its distance from the clock)."""
    unit, seconds = "seconds", ts
    if ctx.rules.enabled("timestamp_units"):
        for at_least, divisor, name in READINGS:
            if abs(ts) >= at_least:
                unit, seconds = name, ts // divisor
                break
    low = utc_text(ctx.now - MAX_PAST_SECONDS)
    high = utc_text(ctx.now + max(ctx.rules.policy.future_skew_seconds, MAX_FUTURE_SECONDS))
    return (
        f"timestamp {ts} read as {unit} is {utc_text(seconds)}, outside the accepted window "
        f"{low} to {high}"
    )


def past_reason(ts: int, now: int) -> str:
    return (
        f"timestamp {ts} ({utc_text(ts)}) is before {utc_text(now - MAX_PAST_SECONDS)}, "
        "more than 35 days before the reference time"
    )


def _iso_seconds(raw: object) -> int | None:
    if not isinstance(raw, str) or not raw.strip() or len(raw) > MAX_ISO_TEXT:
        return None
    text = raw.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # a local time cannot be placed safely
    return int(moment.timestamp())


def refuse_past(batch: Batch, ctx: Context) -> Fix:
    """Usage past the window stays out: moving it would bill it in another period."""
    fix = Fix(batch)
    fix.fail(np.arange(len(batch), dtype=np.int64), NEVER_MOVED)
    return fix
