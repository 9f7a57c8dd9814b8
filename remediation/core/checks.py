"""Validation over a batch: the first problem Stripe would report for each row, as a code.

The checks and their order are `validation.validate_record`'s (the row API, whose reasons this
module does not word): field limits, meter, customer key, value key, value, dimensions,
timestamp. Text is tested with Arrow kernels, numbers in numpy; only rows holding something
unusual (a field past a limit, a JSON number, a timestamp of more than 18 digits) are read one
by one, and those with `validate_record` itself, so both always agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from remediation.codes import ErrorCode
from remediation.core.column import Mask, as_string
from remediation.core.columns import Batch, Column, Indexes, Kind
from remediation.core.text import rows_holding
from remediation.limits import FieldLimits
from remediation.meters import Meter
from remediation.validation import (
    MAX_FUTURE_SECONDS,
    MAX_PAST_SECONDS,
    MeterIndex,
    check_fields,
    parse_timestamp,
    validate_record,
)

Codes = npt.NDArray[np.object_]
# While a batch is checked its codes are small integers: 0 for none, then ErrorCode's members
# (`problem_ids`); comparing and masking them is numpy arithmetic, not an object compare per row.
CodeIds = npt.NDArray[np.int16]
CODES: tuple[ErrorCode | None, ...] = (None, *ErrorCode)
CODE_IDS: dict[str | None, int] = {code: at for at, code in enumerate(CODES)}
_CODE_OBJECTS: Codes = np.array(CODES, dtype=object)
CONTROL_CLASS = "[\x00-\x1f\x7f\u2028\u2029]"
SHORT_DIGITS = 18  # ASCII digits of a count of seconds that fits int64 whatever they are
PLAIN = r"^-?[0-9]+(\.[0-9]+)?$"


def mask(array: pa.Array) -> Mask:
    """A boolean Arrow array as numpy (null: False)."""
    filled = array.fill_null(False) if array.null_count else array
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=bool)


def short_digits(column: Column) -> Mask:
    """Rows whose text is 1 to `SHORT_DIGITS` ASCII digits, once per column (`mark`): Arrow's
    ASCII digit test and the byte lengths, several times faster than a regex (`^[0-9]{1,18}$`)."""
    found: Mask = column.mark("digits", _short_digits)
    return found


def _short_digits(column: Column) -> Mask:
    digits = mask(pc.ascii_is_decimal(column.text))
    return digits & (column.mark("bytes", _byte_lengths) <= SHORT_DIGITS)


def plain_numbers(column: Column) -> Mask:
    """Rows whose text is a plain number (`PLAIN`): ASCII digits alone are one, the regex
    decides on the other present rows only."""
    found = mask(pc.ascii_is_decimal(column.text))
    others = np.flatnonzero(column.present() & ~found)
    if len(others):
        found[others] = mask(pc.match_substring_regex(column.text.take(pa.array(others)), PLAIN))
    return found


def has_control(column: Column) -> Mask:
    """Rows holding a control character (`limits.CONTROL`), once per column (`Column.mark`);
    none in a column known to hold none (`Column.plain_within`)."""
    if column.plain_within is not None:
        return np.zeros(len(column), np.bool_)
    found: Mask = column.mark("control", _control)
    return found


def _control(column: Column) -> Mask:
    """A byte scan finds the few rows that may hold one, the regex decides on those alone."""
    found = np.zeros(len(column), bool)
    suspects = rows_holding(column.text.cast(pa.large_string()), CONTROL_BYTES)
    if len(suspects):
        picked = column.text.take(pa.array(suspects))
        found[suspects] = mask(pc.match_substring_regex(picked, CONTROL_CLASS))
    return found


CONTROL_BYTES = bytes(range(32)) + b"\x7f\xe2"  # U+2028/U+2029 start with 0xE2 in UTF-8


def longer(column: Column, most: int) -> Mask:
    """Rows holding more than `most` characters, as `len()` counts them. A value has at most
    as many characters as bytes: only rows with more bytes are counted in characters, and none
    in a column whose widest value is known to be short enough (`Column.plain_within`)."""
    if column.plain_within is not None and column.plain_within <= most:
        return np.zeros(len(column), np.bool_)
    over: Mask = column.mark("bytes", _byte_lengths) > most
    rows = np.flatnonzero(over)
    if len(rows):
        counted = pc.utf8_length(column.text.take(pa.array(rows)))
        over[rows] = np.asarray(counted.to_numpy(zero_copy_only=False)) > most
    return over


def _byte_lengths(column: Column) -> npt.NDArray[np.int64]:
    """Bytes per row (0 where absent): 0 exactly where `len()` is 0."""
    counted = pc.binary_length(column.text)
    if counted.null_count:
        counted = counted.fill_null(0)
    return np.asarray(counted.to_numpy(zero_copy_only=False), dtype=np.int64)


def field_suspects(batch: Batch, limits: FieldLimits) -> Mask:
    """Rows that may break a field limit (a superset: `check_fields` has the last word)."""
    suspect = mask(pc.is_valid(batch.malformed))
    for column, most in (
        (batch.identifier, limits.max_identifier_chars),
        (batch.event_name, limits.max_event_name_chars),
    ):
        suspect |= longer(column, most) | has_control(column)
    suspect |= batch.timestamp.is_text() & has_control(batch.timestamp)
    plain = {k: c for k, c in batch.payload.items() if c.plain_within is not None}
    if len(plain) < len(batch.payload):
        others = [(k, c) for k, c in batch.payload.items() if c.plain_within is None]
        suspect |= _payload_suspects(others, limits)
    for key, column in plain.items():
        if len(key) > limits.max_payload_key_chars or not key.isprintable():
            suspect |= column.present()
        text = column.is_text()
        suspect |= text & (longer(column, limits.max_payload_value_chars))
        suspect |= text & has_control(column)
        if column.kinds is not None:
            numbers = (column.kinds == Kind.INT) | (column.kinds == Kind.FLOAT)
            odd = (column.kinds == Kind.JSON) | numbers & longer(
                column, limits.max_payload_value_chars
            )
            suspect |= odd & column.present()
    return suspect


def _payload_suspects(columns: list[tuple[str, Column]], limits: FieldLimits) -> Mask:
    """`field_suspects` of payload columns not known plain (`Column.plain_within`: JSON), all
    at once: rows naming keys of their own make a column per key, and each measured by its
    own Arrow calls cost ~0.5 ms a key. What a column's values make suspect is a mark of it
    (rows taken carry it: the later checks of a batch's rows only join them), made for the
    columns without it together (`_suspect_values`)."""
    most = limits.max_payload_value_chars
    name = f"suspect values {most}"
    unmarked = [column for _, column in columns if not _marked(column, name)]
    if unmarked:
        for column, found in zip(unmarked, _suspect_values(unmarked, most), strict=True):
            column.mark(name, _given(found))
    suspect = np.zeros(len(columns[0][1]), bool)
    for key, column in columns:
        if len(key) > limits.max_payload_key_chars or not key.isprintable():
            suspect |= column.present()
    marks = np.stack([column.mark(name, _unmeasured) for _, column in columns])
    joined: Mask = suspect | marks.any(axis=0)
    return joined


def _suspect_values(columns: list[Column], most: int) -> Mask:
    """Per column (a row each), the rows `field_suspects` suspects for their value: a text
    longer than `most` or holding a control character, a number longer than `most`, an
    object or array."""
    _measure(columns)
    present = np.stack([column.present() for column in columns])
    kinds = np.stack([column.kind_array() for column in columns])
    sizes = np.stack([column.mark("bytes", _byte_lengths) for column in columns])
    control = np.stack([has_control(column) for column in columns])
    long = sizes > most  # as `longer`: those counted in characters below
    for at in np.flatnonzero(long.any(axis=1)).tolist():
        long[at] = longer(columns[at], most)
    text = present & (kinds == Kind.TEXT)
    numbers = (kinds == Kind.INT) | (kinds == Kind.FLOAT)
    odd = (kinds == Kind.JSON) | numbers & long
    found: Mask = text & (long | control) | odd & present
    return found


def _given(values: npt.NDArray[Any]) -> Callable[[Column], npt.NDArray[Any]]:
    """A mark's values known already (`Column.mark` computes none)."""
    return lambda _: values


class _Unmeasured(Exception):
    """A column without a mark yet (`_marked`)."""


def _unmeasured(column: Column) -> npt.NDArray[np.int64]:
    raise _Unmeasured


def _marked(column: Column, name: str) -> bool:
    """Whether `column` has the mark `name` (none is made here)."""
    try:
        column.mark(name, _unmeasured)
    except _Unmeasured:
        return False
    return True


def _measure(columns: list[Column]) -> None:
    """The "present", "bytes" and "control" marks of the columns without them, measured at
    once over their texts joined (each as `_present`, `_byte_lengths` and `_control` gives
    it). A column taken from a measured one carries its marks: it is not measured again."""
    unmeasured = [column for column in columns if not _marked(column, "bytes")]
    if len(unmeasured) < 2:
        return
    joined = Column(pa.concat_arrays([as_string(column.text) for column in unmeasured]))
    sizes, control = _byte_lengths(joined), _control(joined)
    present = mask(pc.is_valid(joined.text))
    start = 0
    for column in unmeasured:
        at = slice(start, start + len(column))
        column.mark("bytes", _given(sizes[at]))
        column.mark("control", _given(control[at]))
        column.mark("present", _given(present[at]))
        start = at.stop


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
    unmarked = [column for column in typed if not _marked(column, "odd floats")]
    if unmarked:  # which columns hold a float at all: once for all of them
        floats = np.stack([column.kind_array() for column in unmarked]) == _FLOAT_KIND
        for column, held in zip(unmarked, np.asarray(floats.any(axis=1)), strict=True):
            column.mark("odd floats", _odd_floats if held else _none)
    return odd | np.stack([column.mark("odd floats", _unmeasured) for column in typed]).any(0)


def _odd_floats(column: Column) -> Mask:
    """A column's floats whose plain text is not their JSON text (`_odd_values`)."""
    odd = np.zeros(len(column), bool)
    assert column.kinds is not None
    floats = np.flatnonzero(column.kinds == Kind.FLOAT)
    if len(floats):
        texts = column.text.take(pa.array(floats))
        odd[floats[~mask(pc.match_substring_regex(texts, _PLAIN_FLOAT))]] = True
    return odd


def _none(column: Column) -> Mask:
    return np.zeros(len(column), bool)


_PLAIN_FLOAT = r"^-?[0-9]+\.[0-9]*[1-9]$"  # repr() of a float that is its own plain number


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
    blank = (customer.mark("bytes", _byte_lengths) == 0) | mask(pc.utf8_is_space(customer.text))
    if customer.kinds is not None:  # a JSON null is no customer; a number is one
        blank = (blank & (customer.kinds == Kind.TEXT)) | (customer.kinds == Kind.NULL)
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
