"""Text built column-wise on pyarrow string arrays, byte-identical to Python's csv and json.

Rows are joined element-wise by Arrow (`join`); the few cells that need quoting or escaping
are found by a byte scan, rewritten alone and put back with one gather (`_scatter`). A joined
array's data buffer is the text itself, row boundaries at its offsets. Texts of many parts
(CSV lines, audit lines, JSON rows) are gathered in one take from a pool of their parts
(`TextPool`): CSV lines from every column's cells and the delimiters (`csv_lines`; `csv_rows`
is its case of whole columns).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from functools import lru_cache
from json.encoder import encode_basestring
from typing import TypeVar, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

Indices = npt.NDArray[np.int64]
P = TypeVar("P")  # a part of a joined text: a constant (str) or values to take it from
Mask = npt.NDArray[np.bool_]

_CSV_ROW_END = "\r\n"  # csv.writer's default (excel) lineterminator
_CSV_LONE_EMPTY = '""'  # csv.writer's spelling of a row holding one empty field
_JSON_ESCAPED = bytes(range(0x20)) + b'"\\'  # what json.dumps(ensure_ascii=False) escapes


def _as_text(values: pa.Array, length: int | None = None) -> pa.Array:
    """`values` as large_string, so that any mix of inputs can share one pool."""
    if not isinstance(values, pa.Array) or not (
        pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    ):
        raise TypeError(f"expected a pyarrow string array, got {type(values).__name__}")
    if length is not None and len(values) != length:
        raise ValueError(f"expected {length} rows, got an array of {len(values)}")
    return values if pa.types.is_large_string(values.type) else values.cast(pa.large_string())


def _mask(flags: pa.Array) -> Mask:
    """A boolean arrow result as numpy, null (from a null input) counting as False."""
    mask: Mask = (pc.fill_null(flags, False) if flags.null_count else flags).to_numpy(
        zero_copy_only=False
    )
    return mask


@lru_cache(maxsize=64)
def _byte_runs(ascii_bytes: bytes) -> tuple[tuple[int, int], ...]:
    """`ascii_bytes` as inclusive runs, so a scan makes one or two comparisons per run (a few
    sets of bytes, met in every batch: computed once each)."""
    runs: list[tuple[int, int]] = []
    for byte in sorted(set(ascii_bytes)):
        if runs and runs[-1][1] == byte - 1:
            runs[-1] = (runs[-1][0], byte)
        else:
            runs.append((byte, byte))
    return tuple(runs)


def _holds_any(data: npt.NDArray[np.uint8], ascii_bytes: bytes) -> Mask:
    """Which bytes of `data` are among `ascii_bytes`."""
    hit = np.zeros(len(data), np.bool_)
    for low, high in _byte_runs(ascii_bytes):
        if low == high:
            hit |= data == low
        else:
            hit |= (data >= low) & (data <= high) if low else data <= high
    return hit


def _any_of(data: npt.NDArray[np.uint8], ascii_bytes: bytes) -> bool:
    """Whether `data` holds any of `ascii_bytes`: most texts hold none, which a search per
    byte (memchr) and a minimum for a range from NUL tell several times faster than
    `_holds_any`'s compare of every byte (0.014 against 0.32 ms for 13,500 identifiers)."""
    raw: bytes | None = None
    for low, high in _byte_runs(ascii_bytes):
        if low == high:
            raw = data.tobytes() if raw is None else raw
            if raw.find(low.to_bytes(1, "big")) >= 0:
                return True
        elif low == 0:
            if len(data) and int(data.min()) <= high:
                return True
        elif ((data >= low) & (data <= high)).any():
            return True
    return False


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
    if not _any_of(data, ascii_bytes):
        return np.empty(0, np.int64)
    positions = np.flatnonzero(_holds_any(data, ascii_bytes)) + offsets[0]
    rows: Indices = np.searchsorted(offsets, positions, side="right") - 1
    rows = rows[np.flatnonzero(np.diff(rows, prepend=-1))]
    return rows[_mask(values.is_valid())[rows]] if values.null_count else rows


def byte_counts(values: pa.Array, byte: int) -> Indices:
    """How many times the ASCII `byte` occurs in each value of a string array (0 where null).

    Counted on the data buffer by numpy: twice as fast as `pc.count_substring`, and exact, an
    ASCII byte never being part of a longer character in UTF-8."""
    _, offsets_buffer, data_buffer = values.buffers()
    wide = np.int64 if pa.types.is_large_string(values.type) else np.int32
    offsets = np.frombuffer(offsets_buffer, wide)[values.offset : values.offset + len(values) + 1]
    if data_buffer is None or len(values) == 0:
        return np.zeros(len(values), np.int64)
    data = np.frombuffer(data_buffer, np.uint8)[offsets[0] : offsets[-1]]
    found = np.flatnonzero(data == byte) + offsets[0]
    counts: Indices = np.diff(np.searchsorted(found, offsets)).astype(np.int64)
    if values.null_count:
        counts[_mask(values.is_null())] = 0
    return counts


def merged_constants(parts: Sequence[P]) -> list[P]:
    """Adjacent constants (strings) as one, since every part costs a kernel element per row;
    other parts kept as they are."""
    merged: list[P] = []
    for part in parts:
        last = merged[-1] if merged else None
        if isinstance(part, str) and isinstance(last, str):
            merged[-1] = cast(P, last + part)
        else:
            merged.append(part)
    return merged


def join(parts: Sequence[pa.Array | str], length: int) -> pa.Array:
    """Row i = "".join(p[i] if p is an array else p for p in parts), as large_string.

    Arrays are string or large_string of `length` rows and must hold no nulls: a null has no
    text, and guessing one ("" or "null") belongs to the caller. Arrow's own element-wise join
    does the work (measured: 0.19 s for 17 parts x 900,000 rows, 15x a gather by index).
    """
    merged = merged_constants(parts)
    arguments: list[pa.Array | pa.Scalar] = []
    for at, part in enumerate(merged):
        if isinstance(part, str):
            arguments.append(pa.scalar(part, pa.large_string()))
            continue
        column = _as_text(part, length)
        if column.null_count:
            raise ValueError(f"join: part {at} holds {column.null_count} nulls")
        arguments.append(column)
    if not any(isinstance(a, pa.Array) for a in arguments):
        text = "".join(str(p) for p in merged)
        return pa.repeat(pa.scalar(text, pa.large_string()), length)
    joined: pa.Array = pc.binary_join_element_wise(*arguments, pa.scalar("", pa.large_string()))
    return joined


class TextPool:
    """Texts made of parts, every text's parts gathered in order from one pool in one take (a
    string array's data is its values one after the other, so a text's parts side by side in
    the pool's order are its text). A part is a constant (`constant`) or a value of an array
    (`start` + its position); each array is pooled once (by identity). The constants named
    when the pool is made come first; others come after the arrays, their places negative
    until the pool is made (then one pass over the places resolves them: naming the
    constants first spares it). Audit lines, CSV lines and JSON rows are made this way:
    joined element-wise, then put in order, they made every text's bytes two or three
    times."""

    EMPTY = 0  # the place of "": it pads a text of fewer parts than another

    def __init__(self, constants: Iterable[str] = ()) -> None:
        self._first = list(dict.fromkeys(("", *constants)))  # places 0, 1, ...
        self._constants = {text: at for at, text in enumerate(self._first)}
        self._later: list[str] = []  # after the arrays
        self._starts: dict[int, int] = {}  # id(array given) -> where its values start
        self._given: list[pa.Array] = []  # held, so that no id above is another array's
        self._arrays: list[pa.Array] = []  # as large_string
        self._size = len(self._first)  # constants named first and arrays' values
        self._pool: pa.Array | None = None

    def constant(self, text: str) -> int:
        """The place of `text` (negative until the pool is made when not named first)."""
        found = self._constants.get(text)
        if found is None:
            self._unmade()
            found = self._constants[text] = -1 - len(self._later)
            self._later.append(text)
        return found

    def start(self, array: pa.Array) -> int:
        """Where the values of `array` (a string array) start in the pool: value i's place is
        this + i."""
        found = self._starts.get(id(array))
        if found is None:
            self._unmade()
            self._arrays.append(_as_text(array))
            self._given.append(array)
            found = self._starts[id(array)] = self._size
            self._size += len(array)
        return found

    def take(self, places: Indices) -> pa.Array:
        """The parts at `places` (a 2-D array: a text's parts on a row), in their order, as
        large_string. Nothing is added to the pool after its first take."""
        if self._pool is None:
            first = pa.array(self._first, pa.large_string())
            later = pa.array(self._later, pa.large_string())
            self._pool = pa.concat_arrays([first, *self._arrays, later])
        if self._later:
            places = np.where(places < 0, self._size - 1 - places, places)
        return self._pool.take(pa.array(places.ravel()))

    def _unmade(self) -> None:
        if self._pool is not None:
            raise RuntimeError("TextPool: nothing is added after its first take")


def texts_of(parts: pa.Array, width: int) -> pa.Array:
    """The texts of `parts` taken `width` at a time (a `TextPool.take` of a 2-D array), as a
    large_string array sharing their data: text i is parts i * width to (i + 1) * width - 1."""
    if width < 1 or len(parts) % width:
        raise ValueError(f"texts_of: {len(parts)} parts are not texts of {width}")
    _, offsets_buffer, data_buffer = parts.buffers()
    every = np.frombuffer(offsets_buffer, np.int64)[parts.offset : parts.offset + len(parts) + 1]
    offsets = np.ascontiguousarray(every[::width])
    return pa.Array.from_buffers(
        pa.large_string(), len(parts) // width, [None, pa.py_buffer(offsets), data_buffer]
    )


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


def _scatter(base: pa.Array, rows: Indices, values: pa.Array) -> pa.Array:
    """`base` with its rows `rows` replaced by `values` (large_string; one gather)."""
    index = np.arange(len(base), dtype=np.int64)
    index[rows] = len(base) + np.arange(len(rows), dtype=np.int64)
    both = pa.concat_arrays([base.cast(pa.large_string()), values.cast(pa.large_string())])
    return both.take(pa.array(index))


def _cells(values: pa.Array, delimiter: str, lone: bool) -> pa.Array:
    """Each cell as csv.writer writes it; `lone` if it is its row's only cell."""
    text = pc.fill_null(values, "") if values.null_count else values
    quoting = _csv_quoting_rows(text, delimiter)
    if len(quoting):
        chosen = pc.replace_substring(text.take(pa.array(quoting)), '"', '""')
        text = _scatter(text, quoting, join(['"', chosen, '"'], len(chosen)))
    if lone:
        empty = np.flatnonzero(_mask(pc.equal(pc.binary_length(text), 0)))
        if len(empty):
            lone_empty = pa.repeat(pa.scalar(_CSV_LONE_EMPTY, pa.large_string()), len(empty))
            text = _scatter(text, empty, lone_empty)
    return text.cast(pa.large_string())


def csv_cells(values: pa.Array, delimiter: str = ",") -> pa.Array:
    """Each value as csv.writer (excel dialect, QUOTE_MINIMAL) writes it; null as ""."""
    _check_delimiter(delimiter)
    return _cells(_as_text(values), delimiter, lone=False)


def csv_rows(
    columns: Sequence[pa.Array], delimiter: str = ","
) -> tuple[pa.Buffer | bytes, Indices]:
    """The bytes csv.writer(f, delimiter=delimiter).writerows(rows) writes, and row offsets.

    rows[i] = [column[i] or "" for column in columns], lines end in "\r\n", text is UTF-8.
    Row i is data[offsets[i]:offsets[i + 1]], so a caller can cut the output at any row.
    """
    if not columns:
        raise ValueError("csv_rows needs at least one column: the row count comes from them")
    length = len(columns[0])
    everyone = np.arange(length, dtype=np.int64)
    for column in columns:
        _as_text(column, length)  # the checks: string arrays of one length
    return csv_lines([[(column, everyone, everyone)] for column in columns], length, delimiter)


# One source of a column's cells: an array of texts (null: absent, an empty CSV cell), the rows
# (lines) that read their cell from it and, for each, its place there.
CellSource = tuple[pa.Array, Indices, Indices]


def csv_lines(
    columns: Sequence[Sequence[CellSource]], length: int, delimiter: str = ","
) -> tuple[pa.Buffer | bytes, Indices]:
    """What `csv_rows` writes for `length` rows whose cells are read where `columns` say: each
    column's lines, together, once each from its sources. Each source's cells are made once
    (the few that need quoting rewritten and added to it), then every line's cells and
    delimiters are gathered from one pool of texts in one take: a line's parts side by side
    are its text. Gathering each column's rows, then joining the columns element-wise, made
    every cell's bytes twice and cost a kernel call per column and part (a 29,000-row batch
    of five columns: 7.4 -> 5.0 ms)."""
    _check_delimiter(delimiter)
    if not columns:
        raise ValueError("csv_lines needs at least one column")
    lone = len(columns) == 1
    pool = TextPool((delimiter, _CSV_ROW_END))
    width = 2 * len(columns)
    index = np.full((length, width), pool.constant(delimiter), np.int64)
    index[:, -1] = pool.constant(_CSV_ROW_END)
    index[:, 0::2] = _NO_CELL
    for at, sources in enumerate(columns):
        for values, lines, positions in sources:
            if len(lines) != len(positions):
                raise ValueError("csv_lines: a source's lines and positions differ in length")
            if len(positions) and not 0 <= positions.min() <= positions.max() < len(values):
                raise IndexError("csv_lines: a position outside its source")
            if len(positions) * 4 < len(values):  # a few rows of many: measured on their own
                values = values.take(pa.array(positions, pa.int64()))
                positions = np.arange(len(positions), dtype=np.int64)
            cells, positions = _cell_source(_as_text(values), positions, delimiter, lone)
            index[lines, 2 * at] = pool.start(cells) + positions
        if (index[:, 2 * at] == _NO_CELL).any():
            raise ValueError(f"csv_lines: column {at} has lines no source gives a cell")
    if not length:
        return b"", np.zeros(1, np.int64)
    return line_bytes(texts_of(pool.take(index), width))


# A line's cell no source has given yet (`csv_lines`): no place in a pool is this.
_NO_CELL = np.iinfo(np.int64).min


def _cell_source(
    values: pa.Array, positions: Indices, delimiter: str, lone: bool
) -> tuple[pa.Array, Indices]:
    """`values` as csv.writer writes each (`_cells`), as an array with `positions` into it:
    a value that needs quoting (or a lone empty cell) rewritten, added at the end, and its
    rows' positions moved there; the others are `values` as they are ("" where null)."""
    text = pc.fill_null(values, "") if values.null_count else values
    rewrite = _csv_quoting_rows(text, delimiter)
    if lone:
        empty = np.flatnonzero(_mask(pc.equal(pc.binary_length(text), 0)))
        rewrite = np.union1d(rewrite, empty)
    if not len(rewrite):
        return text, positions
    cells = _cells(text.take(pa.array(rewrite)), delimiter, lone)
    moved = np.arange(len(text), dtype=np.int64)
    moved[rewrite] = len(text) + np.arange(len(rewrite), dtype=np.int64)
    return pa.concat_arrays([text, cells]), moved[positions]


def line_bytes(joined: pa.Array) -> tuple[pa.Buffer | bytes, Indices]:
    """The bytes of a large_string array's values and its row offsets (from 0)."""
    if not len(joined):
        return b"", np.zeros(1, np.int64)
    _, offsets_buffer, data_buffer = joined.buffers()
    every = np.frombuffer(offsets_buffer, np.int64)[joined.offset : joined.offset + len(joined) + 1]
    start, end = int(every[0]), int(every[-1])
    data = data_buffer.slice(start, end - start) if data_buffer is not None else b""
    offsets: Indices = every - start
    return data, offsets


def json_strings(values: pa.Array) -> pa.Array:
    """Each value as json.dumps(value, ensure_ascii=False) writes it; null as "null".

    Most values need no escaping and are only wrapped in quotes; the few that do are escaped by
    json's own encoder, which is what json.dumps calls, so the two cannot drift apart.
    """
    text = _as_text(values)
    plain = pc.fill_null(text, "") if text.null_count else text
    quoted = join(['"', plain, '"'], len(text))
    special = rows_holding(text, _JSON_ESCAPED)
    if len(special):
        escaped = [encode_basestring(s) for s in text.take(pa.array(special)).to_pylist()]
        quoted = _scatter(quoted, special, pa.array(escaped, pa.large_string()))
    if text.null_count:
        nulls = np.flatnonzero(_mask(text.is_null()))
        quoted = _scatter(
            quoted, nulls, pa.repeat(pa.scalar("null", pa.large_string()), len(nulls))
        )
    return quoted


def json_inner(values: pa.Array) -> pa.Array | None:
    """Each value as `json_strings` writes it, without its quotes (large_string); None when
    a value is null (its JSON, null, has none). A caller joining it with other parts puts
    the quotes into the constant text around it, which costs nothing (`json_parts`)."""
    text = _as_text(values)
    if text.null_count:
        return None
    special = rows_holding(text, _JSON_ESCAPED)
    if len(special):
        escaped = [encode_basestring(s)[1:-1] for s in text.take(pa.array(special)).to_pylist()]
        text = _scatter(text, special, pa.array(escaped, pa.large_string()))
    return text


def json_parts(values: pa.Array) -> list[pa.Array | str]:
    """`json_strings(values)` as parts for `join`: the quotes apart from the text when no
    value is null (they merge with the constants around them)."""
    inner = json_inner(values)
    return [json_strings(values)] if inner is None else ['"', inner, '"']


def take_parts(parts: Sequence[pa.Array | str], at: pa.Array) -> list[pa.Array | str]:
    """Rows `at` of each array among `parts` (constants kept)."""
    return [part if isinstance(part, str) else part.take(at) for part in parts]


# U+2028 and U+2029 in UTF-8: JSON lets a string hold them raw (json.dumps with
# ensure_ascii=False writes them so), but `str.splitlines()`, JavaScript before ES2019 and many
# line readers end a line there, cutting a JSON Lines line in two.
_LINE_SEPARATORS = (b"\xe2\x80\xa8", b"\xe2\x80\xa9")


def json_lines_safe(texts: pa.Array) -> pa.Array:
    """JSON texts (large_string) with U+2028 and U+2029 written as the escapes `\\u2028` and
    `\\u2029`: the same JSON (outside a string no JSON text holds them), which no line reader
    breaks. A text without them is returned as it is (found by a scan of the bytes for their
    lead byte, 0xE2, rare in most text)."""
    data, offsets = line_bytes(texts)
    raw = np.frombuffer(data, np.uint8)
    lead = np.flatnonzero(raw[:-2] == 0xE2) if len(raw) > 2 else np.zeros(0, np.int64)
    if not len(lead):
        return texts
    third = raw[lead + 2]
    hit = lead[(raw[lead + 1] == 0x80) & ((third == 0xA8) | (third == 0xA9))]
    if not len(hit):
        return texts
    rows = np.unique(np.searchsorted(offsets, hit, side="right") - 1)
    escaped = [
        text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        for text in texts.take(pa.array(rows)).to_pylist()
    ]
    return _scatter(texts, rows, pa.array(escaped, pa.large_string()))


def json_text(value: str) -> str:
    """One string as `json_strings` writes it: json's own encoder, as json.dumps(value,
    ensure_ascii=False) calls it (through an array and back it cost ~40 us a call, and a batch
    of rows each naming keys of their own asks for tens of thousands of keys)."""
    text: str = encode_basestring(value)
    return text
