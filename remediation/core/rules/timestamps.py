"""Timestamp rules: ms/µs/ns to seconds, ISO-8601 to seconds, a small future skew clamped;
usage older than the 35-day window is never moved (another billing period).

Timestamps of up to 18 digits, and UTC times spelled `2025-11-24T10:00:00Z`, are computed on
the whole column in numpy; anything else (other ISO spellings, a JSON float, more digits) goes
through `fix_timestamp_row`, the same steps for one row.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from remediation.changes import Change, Context
from remediation.codes import ErrorCode, code_from_message
from remediation.core.checks import CODE_IDS
from remediation.core.columns import Batch, Column, Indexes, Kind
from remediation.core.reportedcodes import reported_codes
from remediation.core.rules.base import Changes, Fix, one_by_one, set_column
from remediation.core.textmeasures import short_digits
from remediation.errors import Uncorrectable
from remediation.fieldvalues import parse_timestamp, utc_text
from remediation.limits import MAX_ISO_TEXT, shown
from remediation.records import UsageRecord
from remediation.validation import MAX_FUTURE_SECONDS, MAX_PAST_SECONDS

UNITS = ((10**9, "ns"), (10**6, "µs"), (10**3, "ms"))
# (at least, divisor, unit): what a too-large timestamp is read as, in a reason
READINGS = (
    (10**17, 10**9, "nanoseconds"),
    (10**14, 10**6, "microseconds"),
    (10**11, 10**3, "milliseconds"),
)
# A number as JSON spells one, with a fraction or an exponent: a CSV cell holding it is read as
# the same number in JSON is (`1.764e12`, `1764000000000.000`), whole numbers only.
_JSON_SPELLING = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
NEVER_MOVED = "never move usage into another billing period; quarantined for review"


def fix_timestamp(batch: Batch, ctx: Context) -> Fix:
    """ms/µs/ns -> seconds; ISO-8601 -> seconds; a small future skew -> clamped to now."""
    column = batch.timestamp
    short = short_digits(column).copy()
    if column.kinds is not None:
        short &= (column.kinds == Kind.TEXT) | (column.kinds == Kind.INT)
    iso, iso_seconds = _iso_utc(column, ~short, ctx)
    fix = one_by_one(batch, ctx, fix_timestamp_row, np.flatnonzero(~short & ~iso))
    at = np.flatnonzero(short | iso)
    if not len(at):
        return fix
    ts = np.empty(len(at), np.int64)
    digits, texts = short[at], iso[at]
    if digits.any():
        raw = column.text.take(pa.array(at[digits])).cast(pa.int64())
        ts[digits] = raw.to_numpy(zero_copy_only=False)
    changes: list[Changes] = []
    held = _Held(column, at, texts)
    if texts.any():  # read as ISO-8601 first, as `fix_timestamp_row` reads such a row
        ts[texts] = iso_seconds
        before = Column(column.text.take(pa.array(at[texts])))
        changes.append(Changes(at[texts], "iso_timestamp", "timestamp", before, _ints(iso_seconds)))
    if ctx.rules.enabled("timestamp_units"):
        ts = _from_units(ts, at, ctx, changes, held)
    ts = _clamped(ts, at, ctx, changes, fix, held)
    old = ts < ctx.now - MAX_PAST_SECONDS
    fix.fail(at[old], [past_reason(int(t), ctx.now) for t in ts[old].tolist()])
    kinds = column.kinds[at] if column.kinds is not None else None
    new = Column(pa.array(ts).cast(pa.string()), kinds)
    fix.batch = fix.batch.with_fields(timestamp=set_column(fix.batch.timestamp, at, new))
    fix.changes.extend(changes)
    return fix


# A UTC time as most writers spell ISO-8601 (`2025-11-24T10:00:00Z`): read on the column.
# Other spellings (offsets, fractions, a space for "T", blanks) go through the row rule.
_ISO_UTC = (
    "^(?:19|20)[0-9][0-9]-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    "T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z$"
)
_MONTH_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


def _iso_utc(
    column: Column, candidates: npt.NDArray[np.bool_], ctx: Context
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """Rows among `candidates` whose text is a UTC time spelled `_ISO_UTC` on a day that
    exists, and their unix seconds: what `_iso_seconds` gives them (1M rows of ISO text took
    8.3 s one row at a time, against 3.1 s for the same rows as unix seconds)."""
    found = np.zeros(len(column), bool)
    if not ctx.rules.enabled("iso_timestamp"):
        return found, np.zeros(0, np.int64)
    texts_at = candidates & column.present()
    if column.kinds is not None:
        texts_at &= column.kinds == Kind.TEXT
    rows = np.flatnonzero(texts_at)
    if not len(rows):
        return found, np.zeros(0, np.int64)
    texts = column.text.take(pa.array(rows))
    spelled = np.asarray(
        pc.match_substring_regex(texts, _ISO_UTC).to_numpy(zero_copy_only=False), bool
    )
    rows, texts = rows[spelled], texts.filter(pa.array(spelled))
    if not len(rows):
        return found, np.zeros(0, np.int64)

    def part(start: int, stop: int) -> npt.NDArray[np.int64]:
        piece = pc.utf8_slice_codeunits(texts, start, stop).cast(pa.int64())
        return np.asarray(piece.to_numpy(zero_copy_only=False), np.int64)

    year, month, day = part(0, 4), part(5, 7), part(8, 10)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    exists = day <= _MONTH_DAYS[month - 1] + ((month == 2) & leap)
    rows, year, month, day = rows[exists], year[exists], month[exists], day[exists]
    days = ((year - 1970).astype("datetime64[Y]").astype("datetime64[M]") + (month - 1)).astype(
        "datetime64[D]"
    ) + (day - 1)
    clock = part(11, 13)[exists] * 3600 + part(14, 16)[exists] * 60 + part(17, 19)[exists]
    found[rows] = True
    return found, days.astype(np.int64) * 86_400 + clock


class _Held:
    """What the rows `at` held before a first change: a change's `before` is the field as the
    row held it (leading zeros) for its first change when that is not the number's text, the
    seconds the change before gave for the next (it was the number read from the field)."""

    def __init__(self, column: Column, at: Indexes, iso: npt.NDArray[np.bool_]) -> None:
        self.column, self.at = column, at
        self.changed = iso.copy()  # an ISO-8601 text's change says the text itself
        self.differs: npt.NDArray[np.bool_] | None = None  # rows whose text is not `ts`'s

    def before(self, hit: npt.NDArray[np.bool_], ts: npt.NDArray[np.int64]) -> Column:
        """The `before` of a change to the rows `hit` (of `at`), whose seconds were `ts`."""
        first = hit & ~self.changed & self._differs()
        self.changed |= hit
        if not first.any():
            return _ints(ts[hit])
        rows = first[hit]
        text = pc.if_else(
            pa.array(rows),
            self.column.text.take(pa.array(self.at[hit])),
            pa.array(ts[hit]).cast(pa.string()),
        )
        kinds = np.full(len(rows), Kind.INT, np.uint8)
        held = self.column.kinds[self.at[hit]] if self.column.kinds is not None else Kind.TEXT
        kinds[rows] = held[rows] if isinstance(held, np.ndarray) else held
        return Column(text, kinds)

    def _differs(self) -> npt.NDArray[np.bool_]:
        """Rows whose field is not the number's own text, as the row rule tells them
        (`fix_timestamp_row`: a JSON text of the number's digits is the number): ASCII digits
        (`short_digits`) differ from it by leading zeros alone."""
        if self.differs is None:
            text = self.column.text.take(pa.array(self.at))
            zeros = pc.and_(pc.starts_with(text, "0"), pc.greater(pc.binary_length(text), 1))
            self.differs = np.asarray(zeros.fill_null(False), bool)
        return self.differs


def _from_units(
    ts: npt.NDArray[np.int64], at: Indexes, ctx: Context, changes: list[Changes], held: _Held
) -> npt.NDArray[np.int64]:
    ahead = ts > ctx.now + MAX_FUTURE_SECONDS
    low, high = ctx.now - MAX_PAST_SECONDS, _units_bound(ctx)
    for divisor, unit in UNITS:
        seconds = ts // divisor
        hit = ahead & (seconds >= low) & (seconds <= high)
        if hit.any():
            rule = f"timestamp_{unit}_to_s"
            before = held.before(hit, ts)
            changes.append(Changes(at[hit], rule, "timestamp", before, _ints(seconds[hit])))
            ts = np.where(hit, seconds, ts)
            ahead &= ~hit
    return ts


def _units_bound(ctx: Context) -> int:
    """The latest a timestamp read in another unit may be: the accepted window's end (Stripe's
    five minutes, or the skew that is clamped when longer). Bound by the skew alone, a
    millisecond timestamp two minutes ahead with `future_skew_seconds = 0` was quarantined,
    its reason naming a window it was in, while the same moment as ISO-8601 was corrected."""
    return window_end(ctx)


def window_end(ctx: Context) -> int:
    """The latest timestamp a row goes out with: Stripe's five minutes ahead, or the skew
    `clamp_skew` clamps when longer and turned on. With the rule off, a row ten minutes
    ahead was refused by a reason naming a window that held it (the skew's, an hour)."""
    skew = ctx.rules.policy.future_skew_seconds if ctx.rules.enabled("clamp_skew") else 0
    return ctx.now + max(skew, MAX_FUTURE_SECONDS)


def _clamped(
    ts: npt.NDArray[np.int64],
    at: Indexes,
    ctx: Context,
    changes: list[Changes],
    fix: Fix,
    held: _Held,
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
        before = held.before(clamp, ts)
        changes.append(Changes(at[clamp], "clamp_skew", "timestamp", before, _ints(now)))
    return np.where(ahead, ctx.now, ts)


def _ints(values: npt.NDArray[np.int64]) -> Column:
    return Column(pa.array(values).cast(pa.string()), np.full(len(values), Kind.INT, np.uint8))


def fix_timestamp_row(record: UsageRecord, ctx: Context) -> list[Change]:
    """`fix_timestamp` for one row of any shape."""
    raw, changes = record.timestamp, []
    ts = parse_timestamp(raw)
    spelt = None if ts is not None else spelt_seconds(raw)
    if spelt is not None:
        ts = spelt
    if ts is None:
        ts = _iso_seconds(raw) if ctx.rules.enabled("iso_timestamp") else None
        if ts is None:
            raise Uncorrectable(f"timestamp {shown(raw)} is neither unix seconds nor ISO-8601")
        changes.append(Change("iso_timestamp", "timestamp", raw, ts))

    def before() -> object:
        """The field before the next change: as the row held it for its first when that is
        not the number's own text (` 1764000000000 `, the JSON `1.764e12`: each was
        recorded as the number read from it), else that number."""
        return raw if not changes and str(raw) != str(ts) else ts

    if ts > ctx.now + MAX_FUTURE_SECONDS and ctx.rules.enabled("timestamp_units"):
        for divisor, unit in UNITS:
            seconds = ts // divisor
            if ctx.now - MAX_PAST_SECONDS <= seconds <= _units_bound(ctx):
                changes.append(Change(f"timestamp_{unit}_to_s", "timestamp", before(), seconds))
                ts = seconds
                break
    if ts > ctx.now + MAX_FUTURE_SECONDS:
        skew = ts - ctx.now
        if skew > ctx.rules.policy.future_skew_seconds or not ctx.rules.enabled("clamp_skew"):
            raise Uncorrectable(future_reason(ts, ctx))
        changes.append(Change("clamp_skew", "timestamp", before(), ctx.now))
        ts = ctx.now
    if ts < ctx.now - MAX_PAST_SECONDS:
        raise Uncorrectable(past_reason(ts, ctx.now))
    if spelt is not None and not changes:  # within the window: its digits, as a cell holds them
        if not ctx.rules.enabled("timestamp_units"):
            reason = f"timestamp {shown(raw)} is not written in digits; rule timestamp_units is off"
            raise Uncorrectable(reason)
        changes.append(Change("timestamp_seconds", "timestamp", raw, ts))
    record.timestamp = str(ts) if isinstance(raw, str) else ts
    return changes


def spelt_seconds(raw: object) -> int | None:
    """A whole number a text spells as JSON would (`1.764e12`, `1764000000000.000`), as
    `parse_timestamp` reads the same JSON number; None for any other text. Its size is known
    before it is written out (`1e999999` is never expanded)."""
    if not isinstance(raw, str) or len(raw) > MAX_ISO_TEXT:
        return None
    text = raw.strip()
    if not _JSON_SPELLING.fullmatch(text):
        return None
    number = Decimal(text)
    if number.adjusted() >= 19 or number != number.to_integral_value():
        return None
    return int(number)


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
    high = utc_text(window_end(ctx))
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
    """Usage past the window stays out: moving it would bill it in another period.

    Timestamps of up to 18 digits are read on the column (their reasons made once per
    distinct time); anything else goes through `refuse_past_row`, as `fix_timestamp` splits
    its rows (55,000 refused rows of 1M took 0.3 s one record at a time)."""
    column = batch.timestamp
    short = short_digits(column).copy()
    if column.kinds is not None:
        short &= (column.kinds == Kind.TEXT) | (column.kinds == Kind.INT)
    # Stripe's finding, or our validation's (a usage file's row, or one Stripe refused for
    # another reason): "Stripe found it more than 35 days old" was said of both
    said = reported_codes(batch)[1] == CODE_IDS[ErrorCode.TIMESTAMP_TOO_FAR_IN_PAST]
    said &= not ctx.rules.codes_ours  # the poller's validation found it so, not Stripe
    fix = one_by_one(batch, ctx, refuse_past_row, np.flatnonzero(~short))
    at = np.flatnonzero(short)
    if len(at):
        seconds = column.text.take(pa.array(at)).cast(pa.int64()).to_numpy(zero_copy_only=False)
        times = seconds.tolist()
        by_stripe = said[at].tolist()
        pairs = list(zip(times, by_stripe, strict=True))
        reasons = {pair: _too_old(pair[0], pair[1], ctx.now) for pair in set(pairs)}
        fix.fail(at, [reasons[pair] for pair in pairs])
    return fix


def refuse_past_row(record: UsageRecord, ctx: Context) -> list[Change]:
    """The reason says what the timestamp was read as, as a date (never its distance from
    the clock: Stripe found it too old when it read the row, whatever our reference time)."""
    raw = record.timestamp
    ts = parse_timestamp(raw)
    ts = spelt_seconds(raw) if ts is None else ts
    by_stripe = _stripe_said(record) and not ctx.rules.codes_ours
    if ts is not None:
        raise Uncorrectable(_too_old(ts, by_stripe, ctx.now))
    seconds = _iso_seconds(raw)
    if seconds is None:
        raise Uncorrectable(f"timestamp {shown(raw)}: {NEVER_MOVED}")
    read = f"timestamp {shown(raw)} read as ISO-8601 is {utc_text(seconds)}"
    if not by_stripe and seconds < ctx.now - MAX_PAST_SECONDS:
        cutoff = utc_text(ctx.now - MAX_PAST_SECONDS)
        raise Uncorrectable(
            f"{read}, before {cutoff}, more than 35 days before the reference time; {NEVER_MOVED}"
        )
    raise Uncorrectable(f"{read}: Stripe found it more than 35 days old; {NEVER_MOVED}")


def _stripe_said(record: UsageRecord) -> bool:
    """Whether the row arrived refused as too old (its code, or a message that says so)."""
    code = record.error_code
    if code is None and record.error_message:
        found = code_from_message(record.error_message)
        code = found.value if found is not None else None
    return code == ErrorCode.TIMESTAMP_TOO_FAR_IN_PAST.value


def _too_old(ts: int, stripe_said: bool, now: int) -> str:
    """What a timestamp found too old was read as: in milliseconds (or µs, ns) when it is
    that large (`1760000000000` said "after year 9999", more than 35 days old). Found so by
    our validation (a usage file's row, or one Stripe refused for another reason), against
    the reference time: "Stripe found it" was said of rows Stripe never judged so."""
    if not stripe_said and ts < now - MAX_PAST_SECONDS:
        return f"{past_reason(ts, now)}; {NEVER_MOVED}"
    found = f"Stripe found it more than 35 days old; {NEVER_MOVED}"
    for at_least, divisor, name in READINGS:
        if abs(ts) >= at_least:
            return f"timestamp {ts} read as {name} is {utc_text(ts // divisor)}: {found}"
    return f"timestamp {ts} ({utc_text(ts)}): {found}"
