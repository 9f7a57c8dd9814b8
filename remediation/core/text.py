"""Text built column-wise on pyarrow string arrays, byte-identical to Python's csv and json.

Each builder ends in one `take`: the pieces rows are made of (column values, the quoted or
escaped variants of the few cells that need them, constants such as a delimiter) sit in one
pool array, each row picks its pieces by index, and the taken array's data buffer is then the
text itself, with row boundaries at every `width`-th offset. Nulls, quoting and separators are
all settled in that one pass instead of one compute call each.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from json.encoder import encode_basestring

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # pyarrow ships no type information
import pyarrow.compute as pc

Indices = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

_CSV_ROW_END = "\r\n"  # csv.writer's default (excel) lineterminator
_CSV_LONE_EMPTY = '""'  # csv.writer's spelling of a row holding one empty field
_JSON_ESCAPED = bytes(range(0x20)) + b'"\\'  # what json.dumps(ensure_ascii=False) escapes


class _Pool:
    """The pieces rows are gathered from, kept apart until `gather` puts them in one array."""

    def __init__(self) -> None:
        self._chunks: list[pa.Array] = []
        self._size = 0
        self._constants: dict[str, int] = {}

    def add(self, values: pa.Array) -> int:
        """Append large_string `values`; return the pool index of its first element."""
        start = self._size
        self._chunks.append(values)
        self._size += len(values)
        return start

    def constant(self, text: str) -> int:
        """Pool index of `text`, stored once however many rows use it."""
        if text not in self._constants:
            self._constants[text] = self.add(pa.array([text], pa.large_string()))
        return self._constants[text]

    def gather(self, picks: Indices) -> tuple[Indices, pa.Buffer]:
        """Row i = the pool pieces picks[0, i], picks[1, i], ... concatenated.

        `picks` holds one line per part, because filling whole lines is about twice as fast as
        filling strided columns; the one transposing copy below puts them in row order.
        Returns int64 offsets starting at 0 and the UTF-8 data they cut, so callers can wrap
        them as a large_string array or hand the bytes on as they are.
        """
        width, rows = picks.shape
        if rows * width == 0:
            return np.zeros(rows + 1, np.int64), pa.py_buffer(b"")
        taken = pa.concat_arrays(self._chunks).take(pa.array(picks.T.reshape(-1)))
        _, offsets_buffer, data_buffer = taken.buffers()
        every = np.frombuffer(offsets_buffer, np.int64)[taken.offset :]
        offsets: Indices = every[: rows * width + 1 : width]
        start, end = int(offsets[0]), int(offsets[-1])
        data = data_buffer.slice(start, end - start) if data_buffer else pa.py_buffer(b"")
        return offsets - start, data


def _string_array(offsets: Indices, data: pa.Buffer) -> pa.Array:
    """Wrap `gather`'s output as a large_string array without copying it."""
    return pa.Array.from_buffers(
        pa.large_string(), len(offsets) - 1, [None, pa.py_buffer(offsets), data]
    )


def _as_text(values: pa.Array, length: int | None = None) -> pa.Array:
    """`values` as large_string, so that any mix of inputs can share one pool."""
    if not isinstance(values, pa.Array) or not (
        pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    ):
        raise TypeError(f"expected a pyarrow string array, got {type(values).__name__}")
    if length is not None and len(values) != length:
        raise ValueError(f"expected {length} rows, got an array of {len(values)}")
    return values.cast(pa.large_string())


def _mask(flags: pa.Array) -> Mask:
    """A boolean arrow result as numpy, null (from a null input) counting as False."""
    mask: Mask = pc.fill_null(flags, False).to_numpy(zero_copy_only=False)
    return mask


def _byte_runs(ascii_bytes: bytes) -> list[tuple[int, int]]:
    """`ascii_bytes` as inclusive runs, so a scan makes one or two comparisons per run."""
    runs: list[tuple[int, int]] = []
    for byte in sorted(set(ascii_bytes)):
        if runs and runs[-1][1] == byte - 1:
            runs[-1] = (runs[-1][0], byte)
        else:
            runs.append((byte, byte))
    return runs


def _holds_any(data: npt.NDArray[np.uint8], ascii_bytes: bytes) -> Mask:
    """Which bytes of `data` are among `ascii_bytes`."""
    hit = np.zeros(len(data), np.bool_)
    for low, high in _byte_runs(ascii_bytes):
        if low == high:
            hit |= data == low
        else:
            hit |= (data >= low) & (data <= high) if low else data <= high
    return hit


def rows_holding(values: pa.Array, ascii_bytes: bytes) -> Indices:
    """Valid rows of a large_string array whose text holds any of `ascii_bytes`, ascending.

    A numpy scan of the data buffer, several times faster than `pc.match_substring_regex`,
    and exact: in UTF-8 an ASCII byte is never part of a longer character.
    """
    _, offsets_buffer, data_buffer = values.buffers()
    if data_buffer is None or len(values) == 0:
        return np.empty(0, np.int64)
    offsets = np.frombuffer(offsets_buffer, np.int64)[values.offset :][: len(values) + 1]
    data = np.frombuffer(data_buffer, np.uint8)[offsets[0] : offsets[-1]]
    positions = np.flatnonzero(_holds_any(data, ascii_bytes)) + offsets[0]
    rows: Indices = np.searchsorted(offsets, positions, side="right") - 1
    rows = rows[np.flatnonzero(np.diff(rows, prepend=-1))]
    return rows[_mask(values.is_valid())[rows]] if values.null_count else rows


def _merged_constants(parts: Sequence[pa.Array | str]) -> list[pa.Array | str]:
    """Adjacent constants as one, since every part costs a `take` element per row."""
    merged: list[pa.Array | str] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    return merged


def join(parts: Sequence[pa.Array | str], length: int) -> pa.Array:
    """Row i = "".join(p[i] if p is an array else p for p in parts), as large_string.

    Arrays are string or large_string of `length` rows and must hold no nulls: a null has no
    text, and guessing one ("" or "null") belongs to the caller.
    """
    merged = _merged_constants(parts)
    pool = _Pool()
    picks = np.empty((len(merged), length), np.int64)
    rows = np.arange(length, dtype=np.int64)
    for at, part in enumerate(merged):
        if isinstance(part, str):
            picks[at] = pool.constant(part)
            continue
        column = _as_text(part, length)
        if column.null_count:
            raise ValueError(f"join: part {at} holds {column.null_count} nulls")
        picks[at] = pool.add(column) + rows
    return _string_array(*pool.gather(picks))


def _check_delimiter(delimiter: str) -> None:
    """Refuse what csv.writer refuses, with its own message, so both accept the same."""
    csv.writer(io.StringIO(), delimiter=delimiter)


def _csv_quote_pattern(delimiter: str) -> str:
    """RE2 class of the characters that make csv.writer quote a cell (QUOTE_MINIMAL).

    The delimiter goes in as a code point, so '\\', ']', '^' or NUL need no escaping rules.
    """
    return f'[\\x{{{ord(delimiter):x}}}"\\r\\n]'


def _csv_quoting_rows(values: pa.Array, delimiter: str) -> Indices:
    """Rows csv.writer quotes (QUOTE_MINIMAL): they hold the delimiter, '"', '\\r' or '\\n'."""
    encoded = delimiter.encode()
    rows = rows_holding(values, b'"\r\n' + encoded[:1])
    if len(encoded) == 1 or not len(rows):
        return rows
    # A non-ASCII delimiter's lead byte also starts other characters: confirm those rows.
    held = pc.match_substring_regex(values.take(pa.array(rows)), _csv_quote_pattern(delimiter))
    return rows[_mask(held)]


def _csv_cell_picks(pool: _Pool, values: pa.Array, delimiter: str, lone: bool) -> Indices:
    """Pool indices of each cell as csv.writer writes it; `lone` if it is the row's only cell."""
    picks = pool.add(values) + np.arange(len(values), dtype=np.int64)
    quoting = _csv_quoting_rows(values, delimiter)
    if len(quoting):
        chosen = pc.replace_substring(values.take(pa.array(quoting)), '"', '""')
        picks[quoting] = pool.add(join(['"', chosen, '"'], len(chosen))) + np.arange(len(chosen))
    blank = _csv_blank(values, lone)
    if blank is not None:
        picks[blank] = pool.constant(_CSV_LONE_EMPTY if lone else "")
    return picks


def _csv_blank(values: pa.Array, lone: bool) -> Mask | None:
    """Cells csv.writer writes as nothing, or as '""' when alone in their row (None if none)."""
    nulls = _mask(values.is_null()) if values.null_count else None
    if not lone:
        return nulls
    empty = _mask(pc.equal(pc.binary_length(values), 0))
    return empty if nulls is None else empty | nulls


def csv_cells(values: pa.Array, delimiter: str = ",") -> pa.Array:
    """Each value as csv.writer (excel dialect, QUOTE_MINIMAL) writes it; null as ""."""
    _check_delimiter(delimiter)
    text = _as_text(values)
    pool = _Pool()
    picks = _csv_cell_picks(pool, text, delimiter, lone=False)
    return _string_array(*pool.gather(picks[np.newaxis]))


def csv_rows(
    columns: Sequence[pa.Array], delimiter: str = ","
) -> tuple[pa.Buffer | bytes, Indices]:
    """The bytes csv.writer(f, delimiter=delimiter).writerows(rows) writes, and row offsets.

    rows[i] = [column[i] or "" for column in columns], lines end in "\\r\\n", text is UTF-8.
    Row i is data[offsets[i]:offsets[i + 1]], so a caller can cut the output at any row.
    """
    _check_delimiter(delimiter)
    if not columns:
        raise ValueError("csv_rows needs at least one column: the row count comes from them")
    length, lone = len(columns[0]), len(columns) == 1
    pool = _Pool()
    picks = np.empty((2 * len(columns), length), np.int64)
    for at, column in enumerate(columns):
        picks[2 * at] = _csv_cell_picks(pool, _as_text(column, length), delimiter, lone)
        picks[2 * at + 1] = pool.constant(delimiter)
    picks[-1] = pool.constant(_CSV_ROW_END)
    offsets, data = pool.gather(picks)
    return data, offsets


def json_strings(values: pa.Array) -> pa.Array:
    """Each value as json.dumps(value, ensure_ascii=False) writes it; null as "null".

    Most values need no escaping and are only wrapped in quotes; the few that do are escaped by
    json's own encoder, which is what json.dumps calls, so the two cannot drift apart.
    """
    text = _as_text(values)
    pool = _Pool()
    quote, nothing = pool.constant('"'), pool.constant("")
    picks = np.empty((3, len(text)), np.int64)
    picks[0] = picks[2] = quote
    picks[1] = pool.add(text) + np.arange(len(text), dtype=np.int64)
    special = rows_holding(text, _JSON_ESCAPED)
    if len(special):
        escaped = [encode_basestring(s) for s in text.take(pa.array(special)).to_pylist()]
        picks[0, special] = picks[2, special] = nothing
        picks[1, special] = pool.add(pa.array(escaped, pa.large_string())) + np.arange(len(special))
    if text.null_count:
        nulls = _mask(text.is_null())
        picks[0, nulls] = picks[2, nulls] = nothing
        picks[1, nulls] = pool.constant("null")
    return _string_array(*pool.gather(picks))
