"""Measures of a column's text a row at a time (bytes, characters, control characters, ASCII
digits), kept on the column as marks (`Column.mark`), and the rows they make suspect of breaking
a field limit (`field_suspects`). Apart from `checks`, which turns rows into codes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.column import Mask, as_string
from remediation.core.columns import Batch, Column, Kind
from remediation.core.keyorders import FoldedKey
from remediation.core.text import rows_holding
from remediation.limits import FieldLimits

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
    return digits & (column.mark("bytes", byte_lengths) <= SHORT_DIGITS)


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
    over: Mask = column.mark("bytes", byte_lengths) > most
    rows = np.flatnonzero(over)
    if len(rows):
        counted = pc.utf8_length(column.text.take(pa.array(rows)))
        over[rows] = np.asarray(counted.to_numpy(zero_copy_only=False)) > most
    return over


def byte_lengths(column: Column) -> npt.NDArray[np.int64]:
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
    # a folded key's pairs are within the limits (`folding.fold` folds no others)
    payload = {k: c for k, c in batch.payload.items() if type(k) is not FoldedKey}
    plain = {k: c for k, c in payload.items() if c.plain_within is not None}
    if len(plain) < len(payload):
        others = [(k, c) for k, c in payload.items() if c.plain_within is None]
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
    unmarked = [column for _, column in columns if not marked(column, name)]
    if unmarked:
        for column, found in zip(unmarked, _suspect_values(unmarked, most), strict=True):
            column.mark(name, _given(found))
    suspect = np.zeros(len(columns[0][1]), bool)
    for key, column in columns:
        if len(key) > limits.max_payload_key_chars or not key.isprintable():
            suspect |= column.present()
    marks = np.stack([column.mark(name, unmeasured) for _, column in columns])
    joined: Mask = suspect | marks.any(axis=0)
    return joined


def _suspect_values(columns: list[Column], most: int) -> Mask:
    """Per column (a row each), the rows `field_suspects` suspects for their value: a text
    longer than `most` or holding a control character, a number longer than `most`, an
    object or array."""
    _measure(columns)
    present = np.stack([column.present() for column in columns])
    kinds = np.stack([column.kind_array() for column in columns])
    sizes = np.stack([column.mark("bytes", byte_lengths) for column in columns])
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
    """A column without a mark yet (`marked`)."""


def unmeasured(column: Column) -> npt.NDArray[np.int64]:
    raise _Unmeasured


def marked(column: Column, name: str) -> bool:
    """Whether `column` has the mark `name` (none is made here)."""
    try:
        column.mark(name, unmeasured)
    except _Unmeasured:
        return False
    return True


def _measure(columns: list[Column]) -> None:
    """The "present", "bytes" and "control" marks of the columns without them, measured at
    once over their texts joined (each as `_present`, `byte_lengths` and `_control` gives
    it). A column taken from a measured one carries its marks: it is not measured again."""
    to_measure = [column for column in columns if not marked(column, "bytes")]
    if len(to_measure) < 2:
        return
    joined = Column(pa.concat_arrays([as_string(column.text) for column in to_measure]))
    sizes, control = byte_lengths(joined), _control(joined)
    present = mask(pc.is_valid(joined.text))
    start = 0
    for column in to_measure:
        at = slice(start, start + len(column))
        column.mark("bytes", _given(sizes[at]))
        column.mark("control", _given(control[at]))
        column.mark("present", _given(present[at]))
        start = at.stop
