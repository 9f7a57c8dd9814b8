"""Value rules: a number written with thousands separators, spaces, quotes or an exponent
becomes plain text (`1,234` -> `1234`); too many decimal places are rounded only if policy
allows. A number past the value limits is a reason, never parsed past them.

Plain thousands (`1,234`, `12,345.50`) are rewritten on the whole column; every other shape goes
through the row function.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from decimal import Context as DecimalContext

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.changes import Change, Context, meter_of
from remediation.core.checks import meter_of_rows
from remediation.core.column import Mask
from remediation.core.columns import Batch, Column, Indexes
from remediation.core.rules.base import Changes, Fix, one_by_one, set_column
from remediation.core.textmeasures import longer, mask
from remediation.errors import Uncorrectable
from remediation.fieldvalues import MAX_INT_BITS, decimal_places, integer_digits, plain_number
from remediation.jsonnumbers import json_float
from remediation.limits import DEFAULT_LIMITS, FieldLimits, shown
from remediation.records import UsageRecord
from remediation.validation import check_number

# Values are bounded (at most 100 characters) before they get here: exact arithmetic on them
# needs more than the default 28 significant digits, never more than this.
_EXACT = DecimalContext(prec=250)
# A lone `0` before a group is no thousands (`0,500` is 0.5 where `,` is the decimal mark):
# never read as 500, a 1000x charge (`_refuse_ambiguous_comma`).
THOUSANDS = re.compile(r"[+-]?(?!0[,_ ])\d{1,3}([,_ ]\d{3})+(\.\d+)?")
_ZERO_GROUP = re.compile(r"[+-]?0,\d{3}(,\d{3})*(\.\d+)?")
# Characters `normalize_number` never reads as part of a number (Decimal refuses them; it strips
# only blanks and quotes around the text)
_NEVER_IN_A_NUMBER = "[$€£¥%#/:;!?@&*=<>()\\[\\]{}|~^]"
# what the column lane rewrites: unsigned, commas, at most 18 integer digits
_COLUMN_THOUSANDS = r"^(?:[1-9][0-9]{0,2}|0[0-9]{1,2})(,[0-9]{3}){1,5}(\.[0-9]{1,12})?$"
# One comma and three digits after it: thousands, or a decimal comma (`1,500` is 1.5 where `,`
# is the decimal mark). Refused where it may be (`Rules.decimal_comma`), never guessed.
_COMMA_OR_THOUSANDS = r"^[+-]?[0-9]{1,3},[0-9]{3}$"
_AMBIGUOUS_COMMA = re.compile(_COMMA_OR_THOUSANDS)


def fix_value(batch: Batch, ctx: Context) -> Fix:
    """Strip spaces/quotes/thousands separators, `12.0` -> `12`, exponent forms -> plain."""
    by_key = _rows_by_value_key(batch, ctx)
    lanes = _thousands_lane(batch, ctx, by_key)
    rest = np.ones(len(batch), bool)
    for _, at in lanes:
        rest[at] = False
    failed: dict[int, str] = {}
    for key, at in _digitless_lane(batch, ctx, by_key):
        rest[at] = False
        texts = batch.payload[key].text.take(pa.array(at)).to_pylist()
        failed.update(zip(at.tolist(), map(not_a_number, texts), strict=True))
    fix = one_by_one(batch, ctx, fix_value_row, np.flatnonzero(rest))
    fix.failed.update(failed)
    for key, at in lanes:
        column = fix.batch.payload[key]
        raw = column.text.take(pa.array(at))
        plain = _plain_thousands(raw)
        payload = dict(fix.batch.payload)
        payload[key] = set_column(column, at, Column(plain))
        fix.batch = fix.batch.with_fields(payload=payload)
        fix.changes.append(
            Changes(at, "normalize_value", f"payload.{key}", Column(raw), Column(plain))
        )
    return fix


def _rows_by_value_key(batch: Batch, ctx: Context) -> dict[str, Mask]:
    """Rows of an active meter by its value key, for keys the batch has (meters sharing a
    value key share one lane)."""
    meters, positions = meter_of_rows(batch, ctx.index)
    by_key: dict[str, Mask] = {}
    for at, meter in enumerate(meters):
        if meter is None or meter.value_key not in batch.payload:
            continue
        rows = by_key.get(meter.value_key)
        of_meter = positions == at
        by_key[meter.value_key] = of_meter if rows is None else rows | of_meter
    return by_key


def _thousands_lane(
    batch: Batch, ctx: Context, by_key: dict[str, Mask]
) -> list[tuple[str, Indexes]]:
    """(value key, rows) of rows whose value is a plain thousands text."""
    if not ctx.rules.enabled("normalize_value"):
        return []
    lanes = []
    for key, rows in by_key.items():
        column = batch.payload[key]
        hit = rows & column.is_text()
        hit &= mask(pc.match_substring_regex(column.text, _COLUMN_THOUSANDS))
        if ctx.rules.decimal_comma:  # left to the row function, which says why it refuses
            hit &= ~mask(pc.match_substring_regex(column.text, _COMMA_OR_THOUSANDS))
        if hit.any():
            lanes.append((key, np.flatnonzero(hit)))
    return lanes


def _digitless_lane(
    batch: Batch, ctx: Context, by_key: dict[str, Mask]
) -> list[tuple[str, Indexes]]:
    """(value key, rows) of rows whose value is text without a decimal digit (`NaN`, `n/a`,
    `twelve`, empty) or with a sign no number holds (`$12.00`, `5%`, `3/4`): no number, as
    `normalize_number` finds (within the length limit; 1M `$1,234.56` values took 6.0 s one
    row at a time)."""
    lanes = []
    most = ctx.index.limits.max_payload_value_chars
    for key, rows in by_key.items():
        column = batch.payload[key]
        hit = rows & column.is_text() & ~longer(column, most)
        text = column.text
        hit &= ~mask(pc.match_substring_regex(text, r"\p{Nd}")) | mask(
            pc.match_substring_regex(text, _NEVER_IN_A_NUMBER)
        )
        if hit.any():
            lanes.append((key, np.flatnonzero(hit)))
    return lanes


def _plain_thousands(raw: pa.Array) -> pa.Array:
    """`normalize_number` of plain thousands texts: commas out, trailing fraction zeros and
    leading integer zeros dropped (`012,345.50` -> `12345.5`); the regexes run on the few texts
    with a point or a leading zero alone."""
    text = pc.replace_substring(raw, ",", "")
    odd = np.flatnonzero(mask(pc.or_(pc.starts_with(text, "0"), pc.match_substring(text, "."))))
    if not len(odd):
        return text  # `1,234` -> `1234`: nothing else to drop
    picked = text.take(pa.array(odd))
    picked = pc.replace_substring_regex(picked, r"(\.[0-9]*?)0+$", r"\1")
    picked = pc.replace_substring_regex(picked, r"\.$", "")
    picked = pc.replace_substring_regex(picked, r"^0+([0-9])", r"\1")
    return set_column(Column(text), odd, Column(picked)).text


def fix_value_row(record: UsageRecord, ctx: Context) -> list[Change]:
    """`fix_value` for one row of any shape."""
    key = meter_of(record, ctx).value_key
    raw = record.payload.get(key)
    _refuse_ambiguous_comma(raw, ctx)
    number = normalize_number(raw, ctx.index.limits)
    if number is None or not ctx.rules.enabled("normalize_value"):
        raise Uncorrectable(not_a_number(raw))
    written = _written(raw, number)
    if _unchanged(raw, written) and check_number(number, ctx.index) is not None:
        return round_value_row(record, ctx)  # past the limits: as `1e-13` written out is
    if _unchanged(raw, written):
        raise Uncorrectable(f"value {shown(raw)} is already a plain number; nothing to correct")
    record.payload[key] = written
    return [Change("normalize_value", f"payload.{key}", raw, written)]


def _refuse_ambiguous_comma(raw: object, ctx: Context) -> None:
    """Uncorrectable for a `1,500` in a file whose `,` may be its decimal mark."""
    text = raw.strip().strip("\"'").strip() if isinstance(raw, str) else ""
    if _ZERO_GROUP.fullmatch(text):
        raise Uncorrectable(
            f"value {shown(raw)}: no thousands group follows a lone 0, so ',' may be a "
            "decimal mark: ambiguous, not corrected"
        )
    if ctx.rules.decimal_comma and _AMBIGUOUS_COMMA.match(text):
        raise Uncorrectable(
            f"value {shown(raw)}: ',' may be this file's decimal mark (';'-delimited "
            "file): ambiguous, not corrected"
        )


def not_a_number(raw: object) -> str:
    """JSON's `""` is named as a CSV's empty cell is (README: it counts as one)."""
    return f"value {shown(None if raw == '' else raw)} is not a number"


def normalize_number(raw: object, limits: FieldLimits = DEFAULT_LIMITS) -> str | None:
    """A plain decimal text for `raw`, or None for NaN, infinity, empty or text (an
    underscore anywhere but between groups of three digits is text, as a comma is).

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
    if THOUSANDS.fullmatch(text):
        text = re.sub(r"[,_ ]", "", text)
    elif "_" in text:
        return None  # `1_0`: no thousands, as `1,0` is not (Decimal would read 10: PEP 515)
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


def json_number(number: str) -> int | float:
    """A plain number's text as a JSON number, written as that text (`jsonnumbers`)."""
    return json_float(number) if "." in number else int(number)


def _written(raw: object, number: str) -> object:
    """The plain `number` as it goes back where `raw` was: text for text, a JSON number of
    the same digits for a number."""
    if isinstance(raw, str):
        return number
    return json_number(number)


def _unchanged(raw: object, written: object) -> bool:
    """Nothing to correct: a JSON `5` written back as `5` (a JSON `5.0` written `5` changed),
    as a text `"5"` written back as `"5"`. A row sent again unchanged would only be refused
    again, under a new identifier. A JSON number with a fraction is compared by its text
    (`repr`: a JsonNumber's is its text in its file): that is what is written and sent."""
    if isinstance(raw, float) and isinstance(written, float):
        return repr(written) == repr(raw)
    return type(written) is type(raw) and written == raw


def round_value(batch: Batch, ctx: Context) -> Fix:
    """Round to the meter's precision if policy allows (never past the integer digits)."""
    return one_by_one(batch, ctx, round_value_row)


def round_value_row(record: UsageRecord, ctx: Context) -> list[Change]:
    key = meter_of(record, ctx).value_key
    raw = record.payload.get(key)
    _refuse_ambiguous_comma(raw, ctx)
    number = plain_number(raw) or normalize_number(raw, ctx.index.limits)
    exact = _without_trailing_zeros(raw, number, ctx)
    if exact is not None:  # `2.50000000000000` is `2.5`: no rounding, the value unchanged
        written = _written(raw, exact)
        record.payload[key] = written
        return [Change("normalize_value", f"payload.{key}", raw, written)]
    _within_places(raw, number, ctx)
    number, places = _rounding_places(raw, number, ctx)
    written = _written(raw, _rounded(raw, number, places, ctx))
    if _unchanged(raw, written):
        reason = f"value {shown(raw)} has at most {places} decimal places; nothing to round"
        raise Uncorrectable(reason)
    record.payload[key] = written
    return [Change("round_value", f"payload.{key}", raw, written)]


def _within_places(raw: object, number: str | None, ctx: Context) -> None:
    """Uncorrectable when the value already has no more decimal places than it may (and
    integer digits within the limit): nothing to round, whatever the policy says. `7` Stripe
    refused for too many digits was quarantined "(0 decimal places) has too many digits;
    policy round_too_many_digits is off"."""
    if number is None or integer_digits(number) > ctx.index.limits.max_value_integer_digits:
        return
    most = ctx.index.limits.max_value_decimal_places
    precision = most if ctx.rules.value_precision is None else min(ctx.rules.value_precision, most)
    if decimal_places(number) <= precision:  # as a rounding that changes nothing says
        reason = f"value {shown(raw)} has at most {precision} decimal places; nothing to round"
        raise Uncorrectable(reason)


def _without_trailing_zeros(raw: object, number: str | None, ctx: Context) -> str | None:
    """The value written without its fraction's trailing zeros, when that alone brings it
    within the decimal places (`value_precision`, at most the limit) and changes what the row
    holds; None otherwise. The same value written shorter, as `normalize_value` writes `12.0`
    as `12`: no rounding policy needed (a value Stripe refused for `2.50000000000000` was
    quarantined as if it had to be rounded)."""
    if number is None or not ctx.rules.enabled("normalize_value"):
        return None
    exact = number.rstrip("0").rstrip(".") if "." in number else number
    exact = "0" if exact in ("-0", "", "-") else exact
    if integer_digits(exact) > ctx.index.limits.max_value_integer_digits:
        return None
    most = ctx.index.limits.max_value_decimal_places
    precision = most if ctx.rules.value_precision is None else min(ctx.rules.value_precision, most)
    if decimal_places(exact) > precision:
        return None
    return None if _unchanged(raw, _written(raw, exact)) else exact


def _rounding_places(raw: object, number: str | None, ctx: Context) -> tuple[str, int]:
    """The value's number and the decimal places it is rounded to, or Uncorrectable with the
    reason it is not: too many integer digits, the rule disabled, rounding not allowed, not a
    number."""
    if number is not None:
        digits, most = integer_digits(number), ctx.index.limits.max_value_integer_digits
        if digits > most:  # rounding cannot fix that
            reason = f"value {shown(raw)} has {digits} integer digits; at most {most} allowed"
            raise Uncorrectable(reason)
    precision = ctx.rules.value_precision
    if not ctx.rules.enabled("round_value"):  # the name the audit gives it turns it off
        reason = f"value {shown(raw)} has too many digits; rule round_value is disabled"
        raise Uncorrectable(reason)
    if not ctx.rules.policy.round_too_many_digits or precision is None:
        places = decimal_places(number) if number else None
        counted = "" if places is None else f" ({places} decimal place{'s' * (places != 1)})"
        why = (  # it said "does not allow rounding" with rounding allowed but no precision
            "policy round_too_many_digits is off"
            if not ctx.rules.policy.round_too_many_digits
            else "policy value_precision names no precision to round to"
        )
        raise Uncorrectable(f"value {shown(raw)}{counted} has too many digits; {why}")
    if number is None:
        raise Uncorrectable(not_a_number(raw))
    return number, min(precision, ctx.index.limits.max_value_decimal_places)


def _rounded(raw: object, number: str, places: int, ctx: Context) -> str:
    """`number` rounded half to even to `places` decimal places, as a value's text; refused
    when rounding up gives it one integer digit too many."""
    step = Decimal(1).scaleb(-places)
    rounded = Decimal(number).quantize(step, rounding=ROUND_HALF_EVEN, context=_EXACT)
    digits = integer_digits(f"{rounded:f}")
    if digits > ctx.index.limits.max_value_integer_digits:  # `99…9.6` rounds up one digit
        most = ctx.index.limits.max_value_integer_digits
        reason = (
            f"value {shown(raw)} rounded to {places} decimal places has {digits} integer "
            f"digits; at most {most} allowed"
        )
        raise Uncorrectable(reason)
    return normalize_number(rounded, ctx.index.limits) or "0"
