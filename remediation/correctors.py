"""One small corrector per error code, looked up in `CORRECTORS`.

A corrector gets a working copy of the record (it may change it) and returns the changes it
made, or raises `Uncorrectable` with the reason the record goes to quarantine. Every step has
a rule name that `[policy] disabled_rules` can turn off. No corrector sees a record past the
field limits: `CORRECTORS` refuses those first (a fuzzy match over a 10 MB event name, or an
exponent expanded into a million digits, would never end).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from decimal import Context as DecimalContext

from remediation.changes import Change, Context, Corrector, meter_of
from remediation.codes import ErrorCode
from remediation.errors import Uncorrectable
from remediation.limits import DEFAULT_LIMITS, MAX_ISO_TEXT, FieldLimits, shown
from remediation.records import UsageRecord
from remediation.reroute import (
    drop_unused_keys,
    fill_dimensions,
    fix_event_name,
    reroute_to_successor,
)
from remediation.validation import (
    MAX_FUTURE_SECONDS,
    MAX_INT_BITS,
    MAX_PAST_SECONDS,
    check_fields,
    decimal_places,
    integer_digits,
    parse_timestamp,
    plain_number,
    utc_text,
)

# Values are bounded (at most 100 characters) before they get here: exact arithmetic on them
# needs more than the default 28 significant digits, never more than this.
_EXACT = DecimalContext(prec=250)

# --- timestamps ---------------------------------------------------------------------------

_UNITS = ((10**9, "ns"), (10**6, "µs"), (10**3, "ms"))


def fix_timestamp(record: UsageRecord, ctx: Context) -> list[Change]:
    """ms/µs/ns -> seconds; ISO-8601 -> seconds; a small future skew -> clamped to now."""
    raw, changes = record.timestamp, []
    ts = parse_timestamp(raw)
    if ts is None:
        ts = _iso_seconds(raw) if ctx.rules.enabled("iso_timestamp") else None
        if ts is None:
            raise Uncorrectable(f"timestamp {shown(raw)} is neither unix seconds nor ISO-8601")
        changes.append(Change("iso_timestamp", "timestamp", raw, ts))
    if ts > ctx.now + MAX_FUTURE_SECONDS and ctx.rules.enabled("timestamp_units"):
        ts = _from_units(ts, ctx, changes)
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


def _from_units(ts: int, ctx: Context, changes: list[Change]) -> int:
    for divisor, unit in _UNITS:
        seconds = ts // divisor
        if ctx.now - MAX_PAST_SECONDS <= seconds <= ctx.now + ctx.rules.policy.future_skew_seconds:
            changes.append(Change(f"timestamp_{unit}_to_s", "timestamp", ts, seconds))
            return seconds
    return ts


# (at least, divisor, unit): what a too-large timestamp is read as, in a reason
_READINGS = (
    (10**17, 10**9, "nanoseconds"),
    (10**14, 10**6, "microseconds"),
    (10**11, 10**3, "milliseconds"),
)


def future_reason(ts: int, ctx: Context) -> str:
    """Why a timestamp that no unit or clamp brings into the window is quarantined: what it
    was read as and the window, as dates (never its distance from the clock)."""
    unit, seconds = "seconds", ts
    if ctx.rules.enabled("timestamp_units"):
        for at_least, divisor, name in _READINGS:
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


def refuse_past(record: UsageRecord, ctx: Context) -> list[Change]:
    raise Uncorrectable("never move usage into another billing period; quarantined for review")


# --- values -------------------------------------------------------------------------------

_THOUSANDS = re.compile(r"[+-]?\d{1,3}([,_ ]\d{3})+(\.\d+)?")


def fix_value(record: UsageRecord, ctx: Context) -> list[Change]:
    """Strip spaces/quotes/thousands separators, `12.0` -> `12`, exponent forms -> plain."""
    key = meter_of(record, ctx).value_key
    raw = record.payload.get(key)
    number = normalize_number(raw, ctx.index.limits)
    if number is None or not ctx.rules.enabled("normalize_value"):
        raise Uncorrectable(f"value {shown(raw)} is not a number")
    if number == raw:
        raise Uncorrectable(f"value {shown(raw)} is already a plain number; nothing to correct")
    record.payload[key] = number if isinstance(raw, str) else _json_number(number)
    return [Change("normalize_value", f"payload.{key}", raw, record.payload[key])]


def normalize_number(raw: object, limits: FieldLimits = DEFAULT_LIMITS) -> str | None:
    """A plain decimal text for `raw`, or None for NaN, infinity, empty or text.

    Raises Uncorrectable for a number past the value limits: its length is checked before it
    is parsed, and an exponent is never expanded past them (`1e100000000` stays a reason)."""
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, int) and raw.bit_length() > MAX_INT_BITS:
        raise Uncorrectable(f"value {shown(raw)} has more than {MAX_INT_BITS // 4} digits")
    text = str(raw).strip().strip("\"'").strip()
    if len(text) > limits.max_payload_value_chars:
        most = limits.max_payload_value_chars
        raise Uncorrectable(f"value {shown(raw)} is {len(text)} characters long; at most {most}")
    if _THOUSANDS.fullmatch(text):
        text = re.sub(r"[,_ ]", "", text)
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    return _plain_text(number, raw, limits)


def _plain_text(number: Decimal, raw: object, limits: FieldLimits) -> str:
    """`number` written out, once its size is known to be within the limits."""
    if number.is_zero():
        return "0"
    digits, most = max(number.adjusted() + 1, 0), limits.max_value_integer_digits
    if digits > most:
        reason = f"value {shown(raw)} has {digits} integer digits; at most {most} allowed"
        raise Uncorrectable(reason)
    places = max(-number.normalize(_EXACT).as_tuple().exponent, 0)  # type: ignore[operator]
    written = number.is_signed() + max(digits, 1) + (places + 1 if places else 0)
    if written > limits.max_payload_value_chars:
        most = limits.max_value_decimal_places
        reason = f"value {shown(raw)} has {places} decimal places; at most {most} allowed"
        raise Uncorrectable(reason)
    if places == 0:
        return str(int(number))
    return format(number.normalize(_EXACT), "f")


def _json_number(number: str) -> int | float:
    return float(number) if "." in number else int(number)


def round_value(record: UsageRecord, ctx: Context) -> list[Change]:
    """Round to the meter's precision if policy allows (never past the integer digits)."""
    key = meter_of(record, ctx).value_key
    raw = record.payload.get(key)
    number = plain_number(raw) or normalize_number(raw, ctx.index.limits)
    if number is not None:
        digits, most = integer_digits(number), ctx.index.limits.max_value_integer_digits
        if digits > most:  # rounding cannot fix that
            reason = f"value {shown(raw)} has {digits} integer digits; at most {most} allowed"
            raise Uncorrectable(reason)
    precision = ctx.rules.value_precision
    if not ctx.rules.policy.round_too_many_digits or precision is None:
        counted = f" ({decimal_places(number)} decimal places)" if number else ""
        reason = (
            f"value {shown(raw)}{counted} has too many digits and policy does not allow rounding"
        )
        raise Uncorrectable(reason)
    if number is None:
        raise Uncorrectable(f"value {shown(raw)} is not a number")
    places = min(precision, ctx.index.limits.max_value_decimal_places)
    step = Decimal(1).scaleb(-places)
    rounded = Decimal(number).quantize(step, rounding=ROUND_HALF_EVEN, context=_EXACT)
    text = normalize_number(rounded, ctx.index.limits) or "0"
    record.payload[key] = text if isinstance(raw, str) else _json_number(text)
    return [Change("round_value", f"payload.{key}", raw, record.payload[key])]


# --- payload keys ---------------------------------------------------------------------------


def rename_value_key(record: UsageRecord, ctx: Context) -> list[Change]:
    meter = meter_of(record, ctx)
    change = _rename_alias(record, meter.value_key, ctx.rules.value_keys, {meter.customer_key})
    if change is None or not ctx.rules.enabled("rename_value_key"):
        raise Uncorrectable(f"no single aliased column for value key {meter.value_key!r}")
    return [change]


def fill_customer_key(record: UsageRecord, ctx: Context) -> list[Change]:
    meter = meter_of(record, ctx)
    if not ctx.rules.enabled("fill_customer_key"):
        raise Uncorrectable("rule fill_customer_key is disabled")
    change = _rename_alias(record, meter.customer_key, ctx.rules.customer_keys, {meter.value_key})
    if change is not None:
        return [change]
    found = {
        str(v).strip()
        for k, v in record.extra.items()
        if k.lower() in ctx.rules.customer_keys and str(v).strip()
    }
    if len(found) != 1:
        raise Uncorrectable(f"no single aliased column for customer key {meter.customer_key!r}")
    value = found.pop()
    record.payload[meter.customer_key] = value
    return [Change("fill_customer_key", f"payload.{meter.customer_key}", None, value)]


def _rename_alias(
    record: UsageRecord, target: str, aliases: tuple[str, ...], exclude: set[str]
) -> Change | None:
    candidates = [
        k for k in record.payload if k != target and k not in exclude and k.lower() in aliases
    ]
    if len(candidates) != 1:
        return None
    value = record.payload.pop(candidates[0])
    record.payload[target] = value
    return Change("rename_key", f"payload.{candidates[0]}", candidates[0], target)


def fix_customer(record: UsageRecord, ctx: Context) -> list[Change]:
    """Customer map, then trim/case fixes, then one unique metadata search hit."""
    key = meter_of(record, ctx).customer_key
    raw = str(record.payload.get(key, ""))
    for rule, candidate in _customer_candidates(raw, ctx):
        if candidate and candidate != raw and ctx.rules.enabled(rule):
            record.payload[key] = candidate
            return [Change(rule, f"payload.{key}", raw, candidate)]
    raise Uncorrectable(f"customer {shown(raw)} is not in the customer map and has no unique match")


def _customer_candidates(raw: str, ctx: Context) -> Iterator[tuple[str, str | None]]:
    """Candidates in order; lazily, so the directory is asked only when the map has no answer."""
    trimmed = raw.strip()
    yield "map_customer", ctx.rules.customers.get(raw) or ctx.rules.customers.get(trimmed)
    cased = "cus_" + trimmed[4:] if trimmed.lower().startswith("cus_") else trimmed
    directory = ctx.customers
    if directory is None or directory.exists(cased):
        yield "trim_customer", cased
    key = ctx.rules.policy.customer_metadata_key
    if directory is not None and key and ctx.rules.enabled("search_customer"):
        hits = directory.search_by_metadata(key, trimmed)
        yield "search_customer", hits[0] if len(hits) == 1 else None


def refuse_field(record: UsageRecord, ctx: Context) -> list[Change]:
    """A row past the field limits (or malformed) is never corrected: its reason is the fact."""
    problem = check_fields(record, ctx.index.limits)
    raise Uncorrectable(problem.message if problem else "the row is past the field limits")


def _within_limits(corrector: Corrector) -> Corrector:
    """`corrector`, run only on a record within the field limits (refused with the reason)."""

    def bounded(record: UsageRecord, ctx: Context) -> list[Change]:
        problem = check_fields(record, ctx.index.limits)
        if problem is not None and problem.code != ErrorCode.MALFORMED_ROW:
            raise Uncorrectable(problem.message, problem.code)
        return corrector(record, ctx)

    bounded.__name__ = bounded.__qualname__ = getattr(corrector, "__name__", "corrector")
    return bounded


CORRECTORS: dict[str, Corrector] = {
    code: _within_limits(corrector)
    for code, corrector in {
        ErrorCode.TIMESTAMP_IN_FUTURE: fix_timestamp,
        ErrorCode.TIMESTAMP_INVALID: fix_timestamp,
        ErrorCode.TIMESTAMP_TOO_FAR_IN_PAST: refuse_past,
        ErrorCode.INVALID_VALUE: fix_value,
        ErrorCode.VALUE_TOO_MANY_DIGITS: round_value,
        ErrorCode.VALUE_NOT_FOUND: rename_value_key,
        ErrorCode.NO_CUSTOMER_DEFINED: fill_customer_key,
        ErrorCode.CUSTOMER_NOT_FOUND: fix_customer,
        ErrorCode.NO_METER: fix_event_name,
        ErrorCode.ARCHIVED_METER: reroute_to_successor,
        ErrorCode.DIMENSION_COUNT_TOO_HIGH: drop_unused_keys,
        ErrorCode.MISSING_DIMENSION_KEYS: fill_dimensions,
        ErrorCode.FIELD_TOO_LONG: refuse_field,
        ErrorCode.CONTROL_CHARACTER: refuse_field,
        ErrorCode.MALFORMED_ROW: refuse_field,
    }.items()
}
