"""Validation over a batch: the first problem Stripe would report for each row, as a code.

The checks and their order are `validation.validate_record`'s (the row API, whose reasons this
module does not word): field limits, meter, customer key, value key, value, dimensions,
timestamp. Text is tested with Arrow kernels, numbers in numpy; only rows holding something
unusual (a field past a limit, a JSON number, a timestamp of more than 18 digits) are read one
by one, and those with `validate_record` itself, so both always agree.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from remediation.codes import ErrorCode
from remediation.core.column import Mask
from remediation.core.columns import Batch, Column, Indexes, Kind
from remediation.core.textmeasures import (
    byte_lengths,
    field_suspects,
    longer,
    marked,
    mask,
    plain_numbers,
    short_digits,
    unmeasured,
)
from remediation.fieldvalues import parse_timestamp
from remediation.limits import FieldLimits
from remediation.meters import Meter
from remediation.validation import (
    MAX_FUTURE_SECONDS,
    MAX_PAST_SECONDS,
    MeterIndex,
    check_fields,
    validate_record,
)

Codes = npt.NDArray[np.object_]
# While a batch is checked its codes are small integers: 0 for none, then ErrorCode's members
# (`problem_ids`); comparing and masking them is numpy arithmetic, not an object compare per row.
CodeIds = npt.NDArray[np.int16]
CODES: tuple[ErrorCode | None, ...] = (None, *ErrorCode)
OTHER_ID = len(CODES)  # a reported code we do not know: no rule, not valid
CODE_IDS: dict[str | None, int] = {code: at for at, code in enumerate(CODES)}
_CODE_OBJECTS: Codes = np.array(CODES, dtype=object)


def code_objects(ids: CodeIds) -> Codes:
    """Code ids as codes (None for 0)."""
    found: Codes = _CODE_OBJECTS[ids]
    return found


def problem_ids(batch: Batch, index: MeterIndex, now: int) -> CodeIds:
    """The first problem's code per row as a code id (0: valid), as `validate_record` finds
    it (`code_objects` gives the codes)."""
    codes: CodeIds = np.zeros(len(batch), np.int16)
    odd = field_suspects(batch, index.limits) | _odd_values(batch)
    if odd.any():
        at = np.flatnonzero(odd)
        for i, record in zip(at.tolist(), batch.take(at).records(), strict=True):
            problem = validate_record(record, index, now)
            codes[i] = CODE_IDS[problem.code] if problem else 0
    open_rows = ~odd
    _meters(batch, index, codes, open_rows)
    _timestamps(batch.timestamp, now, codes, open_rows & _undecided(codes))
    return codes


def first_field_problems(batch: Batch, limits: FieldLimits) -> list[tuple[int, str, str]]:
    """(row index, code, message) of rows past a field limit (malformed rows included)."""
    suspect = np.flatnonzero(field_suspects(batch, limits))
    found = []
    for i, record in zip(suspect.tolist(), batch.take(suspect).records(), strict=True):
        problem = check_fields(record, limits)
        if problem is not None:
            found.append((i, str(problem.code), problem.message))
    return found


def _undecided(codes: CodeIds) -> Mask:
    undecided: Mask = codes == 0
    return undecided


# A float's kind as a plain number (an enum member read costs a look-up through its class)
_FLOAT_KIND = int(Kind.FLOAT)


def _odd_values(batch: Batch) -> Mask:
    """Rows with a JSON float in the payload whose plain text is not its JSON text (`12.0` is
    `12`, `1e-05` is no plain number): checked one by one. Other floats (`956.93`: `repr`
    without exponent, not integral) and other kinds are checked on their text."""
    odd = np.zeros(len(batch), bool)
    typed = [column for column in batch.payload.values() if column.kinds is not None]
    if not typed:
        return odd
    unmarked = [column for column in typed if not marked(column, "odd floats")]
    if unmarked:  # which columns hold a float at all: once for all of them
        floats = np.stack([column.kind_array() for column in unmarked]) == _FLOAT_KIND
        for column, held in zip(unmarked, np.asarray(floats.any(axis=1)), strict=True):
            column.mark("odd floats", _odd_floats if held else _none)
    return odd | np.stack([column.mark("odd floats", unmeasured) for column in typed]).any(0)


def _odd_floats(column: Column) -> Mask:
    """A column's floats whose plain text is not their JSON text (`_odd_values`)."""
    odd = np.zeros(len(column), bool)
    assert column.kinds is not None
    floats = np.flatnonzero(column.kinds == Kind.FLOAT)
    if len(floats):
        texts = column.text.take(pa.array(floats))
        odd[floats[~mask(pc.match_substring_regex(texts, PLAIN_FLOAT))]] = True
    return odd


def _none(column: Column) -> Mask:
    return np.zeros(len(column), bool)


PLAIN_FLOAT = r"^-?[0-9]+\.[0-9]*[1-9]$"  # repr() of a float that is its own plain number


def meter_of_rows(batch: Batch, index: MeterIndex) -> tuple[list[Meter | None], Indexes]:
    """Each row's meter as (distinct meters, index per row into them; -1: none)."""
    names = batch.event_name.text
    encoded = pc.dictionary_encode(names)
    meters = [index.get(name) for name in encoded.dictionary.to_pylist()]
    positions = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return meters, positions


def _meters(batch: Batch, index: MeterIndex, codes: CodeIds, rows: Mask) -> None:
    """Meter checks; payload checks once per set of keys (meters usually share theirs)."""
    meters, positions = meter_of_rows(batch, index)
    codes[rows & (positions < 0)] = CODE_IDS[ErrorCode.NO_METER]
    by_keys: dict[tuple[str, str, tuple[str, ...]], tuple[Meter, Mask]] = {}
    for at, meter in enumerate(meters):
        of_meter = rows & (positions == at)
        if not of_meter.any():
            continue
        if meter is None:
            codes[of_meter] = CODE_IDS[ErrorCode.NO_METER]
        elif not meter.active:
            codes[of_meter] = CODE_IDS[ErrorCode.ARCHIVED_METER]
        else:
            keys = (meter.customer_key, meter.value_key, meter.dimension_keys)
            first, before = by_keys.get(keys, (meter, np.zeros(len(batch), bool)))
            by_keys[keys] = (first, before | of_meter)
    for meter, of_keys in by_keys.values():
        _payload(batch, meter, index, codes, of_keys)


def _payload(batch: Batch, meter: Meter, index: MeterIndex, codes: CodeIds, rows: Mask) -> None:
    def flag(where: Mask, code: ErrorCode) -> None:
        hit = rows & where & _undecided(codes)
        codes[hit] = CODE_IDS[code]

    customer = batch.payload.get(meter.customer_key)
    if customer is None:
        flag(np.ones(len(batch), bool), ErrorCode.NO_CUSTOMER_DEFINED)
        return
    blank = (customer.mark("bytes", byte_lengths) == 0) | mask(pc.utf8_is_space(customer.text))
    if customer.kinds is not None:  # a JSON null is no customer, a whole number is one
        kinds = customer.kinds  # (`validation.is_customer_id`)
        blank = (blank & (kinds == Kind.TEXT)) | ((kinds != Kind.TEXT) & (kinds != Kind.INT))
    flag(~customer.present() | blank, ErrorCode.NO_CUSTOMER_DEFINED)
    value = batch.payload.get(meter.value_key)
    if value is None:
        flag(np.ones(len(batch), bool), ErrorCode.VALUE_NOT_FOUND)
        return
    flag(~value.present(), ErrorCode.VALUE_NOT_FOUND)
    flag(~plain_numbers(value), ErrorCode.INVALID_VALUE)
    flag(_too_many_digits(value, index), ErrorCode.VALUE_TOO_MANY_DIGITS)
    _dimensions(batch, meter, flag)


def _too_many_digits(value: Column, index: MeterIndex) -> Mask:
    """Plain numbers past the integer digits or the decimal places (`check_number`)."""
    n = len(value)
    shortest = min(index.limits.max_value_integer_digits, (index.value_precision or 0) + 1)
    long_rows = np.flatnonzero(longer(value, shortest))
    over = np.zeros(n, bool)
    if len(long_rows):
        over[long_rows] = _digits_over(value.text.take(pa.array(long_rows)), index)
    return over


def _digits_over(text: pa.Array, index: MeterIndex) -> Mask:
    whole = pc.utf8_ltrim(pc.utf8_ltrim(pc.replace_substring_regex(text, r"\..*$", ""), "-"), "0")
    over = longer(Column(whole), index.limits.max_value_integer_digits)
    if index.value_precision is not None:
        places = pc.replace_substring_regex(text, r"^[^.]*\.?", "")
        over |= longer(Column(places), index.value_precision)
    return over


def _dimensions(batch: Batch, meter: Meter, flag: object) -> None:
    if not meter.dimension_keys:
        return
    assert callable(flag)
    n = len(batch)
    missing = np.zeros(n, bool)
    for key in meter.dimension_keys:
        column = batch.payload.get(key)
        missing |= np.ones(n, bool) if column is None else ~column.present()
    flag(missing, ErrorCode.MISSING_DIMENSION_KEYS)
    used = {meter.customer_key, meter.value_key, *meter.dimension_keys}
    unused = np.zeros(n, bool)
    for key, column in batch.payload.items():
        if key not in used:
            unused |= column.present()
    flag(unused, ErrorCode.DIMENSION_COUNT_TOO_HIGH)


def seconds(column: Column) -> tuple[npt.NDArray[np.int64], Mask, list[tuple[int, int | None]]]:
    """Unix seconds per row where `parse_timestamp` reads them within int64: (values, which
    rows have one, and (row, value or None) of the other present rows read one by one)."""
    n = len(column)
    values = np.zeros(n, np.int64)
    short = short_digits(column).copy()
    if column.kinds is not None:
        short &= (column.kinds == Kind.TEXT) | (column.kinds == Kind.INT)
    if short.any():
        at = np.flatnonzero(short)
        picked = column.text.take(pa.array(at)).cast(pa.int64())
        values[at] = picked.to_numpy(zero_copy_only=False)
    others = column.present() & ~short
    texts = others if column.kinds is None else others & (column.kinds == Kind.TEXT)
    rest: list[tuple[int, int | None]] = []
    if texts.any():  # text holding a letter or a sign of a time no digits reader takes
        at = np.flatnonzero(texts)
        never = mask(pc.match_substring_regex(column.text.take(pa.array(at)), _NOT_SECONDS))
        rest = [(i, None) for i in at[never].tolist()]
        others[at[never]] = False
    others_at = np.flatnonzero(others)
    for i, value in zip(others_at.tolist(), column.take(others_at).values(), strict=True):
        rest.append((i, parse_timestamp(value)))
    return values, short, rest


# Characters no text `parse_timestamp` reads holds (it strips blanks, takes one leading "-"
# and ASCII digits): ISO-8601 times and other words are known unreadable on the column (1M
# ISO times were each read by it, ~0.9 s).
_NOT_SECONDS = "[A-Za-z:./+,]"


def _timestamps(column: Column, now: int, codes: CodeIds, rows: Mask) -> None:
    values, known, rest = seconds(column)
    high, low = now + MAX_FUTURE_SECONDS, now - MAX_PAST_SECONDS
    codes[rows & known & (values > high)] = CODE_IDS[ErrorCode.TIMESTAMP_IN_FUTURE]
    codes[rows & known & (values < low)] = CODE_IDS[ErrorCode.TIMESTAMP_TOO_FAR_IN_PAST]
    for i, ts in rest:
        if not rows[i]:
            continue
        if ts is None:
            codes[i] = CODE_IDS[ErrorCode.TIMESTAMP_INVALID]
        elif ts > high:
            codes[i] = CODE_IDS[ErrorCode.TIMESTAMP_IN_FUTURE]
        elif ts < low:
            codes[i] = CODE_IDS[ErrorCode.TIMESTAMP_TOO_FAR_IN_PAST]
