"""A batch of usage rows held as columns: what readers yield, rules read and writers consume.

Every field is text in an Arrow string array (null: the field is absent). A JSON value that is
not a string keeps its JSON text and a `kind` per row, so a number stays a number on output and
a rule can tell `"12"` from `12`; CSV columns have no kinds (every cell is text). Nothing here
knows a rule: this is the shape of the data, and the conversions to and from `UsageRecord` (the
row API is a batch of one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.text import CellSource
from remediation.jsonnumbers import dumps, json_float, json_int, loads
from remediation.records import UsageRecord

# Runs a function on another thread (`concurrent.futures.Executor.submit`): where a reader
# makes its next batch, or parses or matches its next block, while the engine decides one.
Ahead = Callable[..., "Future[Any]"]

Indexes = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


class Kind(IntEnum):
    """What a value was in its file (CSV cells are all TEXT)."""

    TEXT = 0
    INT = 1
    FLOAT = 2
    BOOL = 3
    NULL = 4  # a JSON null (a key present with no value)
    JSON = 5  # an object or array, held as its JSON text


class Column:
    """One field of every row: `text` (null where absent) and, for JSON, each row's kind.

    A column taken from another (`take`) is only gathered when its text is first read: a rule
    reads few of a batch's columns, and a column no rule touched is never copied at all. It
    remembers where it came from (`_base`, the first column's text, and `_at`, its rows there;
    a take of a take composes them), read or not: a column no rule changed is known as rows of
    its batch's own (`interleaved`).
    """

    __slots__ = (
        "_at",
        "_base",
        "_filled",
        "_length",
        "_marks",
        "_text",
        "kinds",
        "plain_within",
    )

    def __init__(
        self,
        text: pa.Array,
        kinds: npt.NDArray[np.uint8] | None = None,
        filled: pa.Array | None = None,
    ) -> None:
        """`filled`: `text` with "" where it is null, when the caller has it (a CSV block's
        cells, read before their empty cells became absent values)."""
        self._text: pa.Array | None = text
        self._base: pa.Array | None = None
        self._at: pa.Array | None = None
        # The first column's text with "" where it is null, when known: the rows of a column
        # no rule changed are read from it as a CSV writes them (`cells`)
        self._filled: pa.Array | None = filled
        self._length = len(text)
        self._marks: dict[str, npt.NDArray[Any]] = {}
        self.kinds = kinds
        # No value holds a control character nor more than this many bytes, when known (the
        # cells of a CSV block measured as it was read: `csvwidths`); rows taken keep it.
        self.plain_within: int | None = None

    @classmethod
    def taken(cls, base: pa.Array, at: pa.Array, kinds: npt.NDArray[np.uint8] | None) -> Column:
        column = cls.__new__(cls)
        column._text, column._base, column._at = None, base, at
        column._length, column._marks, column.kinds = len(at), {}, kinds
        column._filled, column.plain_within = None, None
        return column

    def mark(self, name: str, compute: Callable[[Column], npt.NDArray[Any]]) -> npt.NDArray[Any]:
        """A per-row fact about this column's values (its lengths, its control characters),
        computed once: rows taken from this column carry it along (`take`)."""
        found = self._marks.get(name)
        if found is None:
            found = self._marks[name] = compute(self)
        return found

    @property
    def text(self) -> pa.Array:
        if self._text is None:
            assert self._base is not None and self._at is not None
            self._text = self._base.take(self._at)
        return self._text

    def cells(self) -> pa.Array:
        """`text` with "" where a value is absent (a CSV's empty cells): gathered from the
        block's own cells when no rule changed the column, instead of filled row by row (a
        27-column CSV with empty cells filled them in every batch: 7 % of the deciding
        thread; alternating runs, 1M rows of it, medians of 6: 6.53 -> 5.93 s)."""
        if self._filled is not None:  # aligned with `_base` (with `text` when not taken)
            return self._filled if self._at is None else self._filled.take(self._at)
        text = self.text
        return pc.fill_null(text, "") if text.null_count else text

    def cell_rows(self) -> tuple[pa.Array, Indexes]:
        """Where this column's cells are, without gathering them: an array of texts (null
        where absent; "" instead when the block's own cells are known, `cells`) and each
        row's place in it."""
        if self._base is not None and self._at is not None:
            array = self._filled if self._filled is not None else self._base
            return array, np.asarray(self._at.to_numpy(zero_copy_only=False), np.int64)
        assert self._text is not None
        array = self._filled if self._filled is not None else self._text
        return array, np.arange(self._length, dtype=np.int64)

    def __len__(self) -> int:
        return self._length

    @classmethod
    def absent(cls, length: int) -> Column:
        return cls(pa.nulls(length, pa.string()))

    @classmethod
    def of(cls, values: Sequence[object]) -> Column:
        """A column of typed values (None: absent), as a reader or a row rule has them."""
        if set(map(type, values)) <= _TEXT_OR_NONE:  # twice as fast as testing each value
            return cls(pa.array(values, pa.string()))
        texts, kinds = zip(*(typed_text(v) for v in values), strict=True) if values else ((), ())
        column_kinds = np.fromiter(kinds, np.uint8, len(values))
        return cls(pa.array(texts, pa.string()), column_kinds if column_kinds.any() else None)

    def take(
        self, indexes: Indexes, at: pa.Array | None = None, composed: Composed | None = None
    ) -> Column:
        """Rows `indexes` (`at`: the same as an Arrow array, when the caller has one;
        `composed`: where the columns taken with this one compose their rows, once each)."""
        kinds = self.kinds[indexes] if self.kinds is not None else None
        at = at if at is not None else pa.array(indexes, pa.int64())
        if self._base is not None and self._at is not None:  # a take of a take: one gather
            before = self._at
            after = before.take(at) if composed is None else composed.of(before)
            column = Column.taken(self._base, after, kinds)  # from the first base
        else:
            assert self._text is not None
            column = Column.taken(self._text, at, kinds)
        column._marks = {name: values[indexes] for name, values in self._marks.items()}
        column._filled, column.plain_within = self._filled, self.plain_within
        return column

    def kind_array(self) -> npt.NDArray[np.uint8]:
        return self.kinds if self.kinds is not None else np.zeros(len(self), np.uint8)

    def is_text(self) -> Mask:
        """Rows whose value is present and text (a CSV cell, a JSON string)."""
        present = self.present()
        return present if self.kinds is None else present & (self.kinds == Kind.TEXT)

    def present(self) -> Mask:
        """Rows where the field is there (once per column: `mark`)."""
        found: Mask = self.mark("present", _present)
        return found

    def values(self) -> list[object]:
        """Typed values (None where absent): for the few rows a rule handles one by one."""
        texts: list[str | None] = self.text.to_pylist()
        if self.kinds is None:
            return list(texts)
        return [value_of(t, int(k)) for t, k in zip(texts, self.kinds.tolist(), strict=True)]


class Composed:
    """Rows `at` of the row arrays of columns taken together, each composed once: the
    columns of a batch taken at once share theirs. A batch of 27 columns composed the same
    rows 27 times at every take (5 % of the deciding thread); alternating runs, 1M rows:
    the 27-column `varied` CSV 7.78 -> 7.24 s (medians of 4), `varied` 3.72 -> 3.62 s (6),
    its JSON Lines 6.63 -> 6.41 s (4)."""

    def __init__(self, at: pa.Array) -> None:
        self.at = at
        self._done: dict[int, tuple[pa.Array, pa.Array]] = {}  # id -> (rows, rows taken)

    def of(self, rows: pa.Array) -> pa.Array:
        done = self._done.get(id(rows))
        if done is None:  # `rows` is held in `_done`: its id is not another's while it is
            done = self._done[id(rows)] = (rows, rows.take(self.at))
        return done[1]


def _present(column: Column) -> Mask:
    return np.asarray(pc.is_valid(column.text).to_numpy(zero_copy_only=False), dtype=bool)


def typed_text(value: object) -> tuple[str | None, int]:
    """(text, kind) of a typed value; None is absent."""
    if value is None:
        return None, Kind.TEXT
    if isinstance(value, str):
        return value, Kind.TEXT
    if isinstance(value, bool):
        return ("true" if value else "false"), Kind.BOOL
    if isinstance(value, int):
        return str(value), Kind.INT
    if isinstance(value, float):  # a JsonNumber's repr is its text in the file
        return repr(value), Kind.FLOAT
    return dumps(value, (", ", ": ")), Kind.JSON


def present_text(value: object) -> tuple[str, int]:
    """(text, kind) of a value that is present even when None (a payload key set to null)."""
    if value is None:
        return "null", Kind.NULL
    text, kind = typed_text(value)
    assert text is not None
    return text, kind


def value_of(text: str | None, kind: int) -> object:
    """The typed value back from its text and kind."""
    if text is None:
        return None
    if kind == Kind.TEXT:
        return text
    if kind == Kind.INT:
        return json_int(text)  # `-0` kept
    if kind == Kind.FLOAT:
        return json_float(text)
    if kind == Kind.BOOL:
        return text == "true"
    if kind == Kind.NULL:
        return None
    return loads(text)


def as_string(array: pa.Array) -> pa.Array:
    """`array` as pa.string() (a cast to the type it has still costs a kernel call)."""
    return array if pa.types.is_string(array.type) else array.cast(pa.string())


def concat_columns(columns: Sequence[Column]) -> Column:
    text = pa.concat_arrays([as_string(c.text) for c in columns])
    if all(c.kinds is None for c in columns):
        return Column(text)
    return Column(text, np.concatenate([c.kind_array() for c in columns]))


KeyOrder = tuple[tuple[str, ...], tuple[str, ...]]  # a row's payload keys and extra keys


class KeyOrders:
    """Each row's payload and extra keys in file order (`Batch.order`), held as a code per row
    into the few distinct orders a batch has: taking rows takes codes, not Python tuples."""

    __slots__ = ("codes", "distinct")

    def __init__(self, distinct: Sequence[KeyOrder], codes: npt.NDArray[np.int32]) -> None:
        self.distinct, self.codes = tuple(distinct), codes

    @classmethod
    def of(cls, orders: Iterable[KeyOrder]) -> KeyOrders:
        index: dict[KeyOrder, int] = {}
        codes = [index.setdefault(order, len(index)) for order in orders]
        return cls(list(index), np.asarray(codes, np.int32))

    @classmethod
    def same(cls, order: KeyOrder, length: int) -> KeyOrders:
        return cls([order], np.zeros(length, np.int32))

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> KeyOrder:
        return self.distinct[self.codes[i]]

    def __iter__(self) -> Iterator[KeyOrder]:
        distinct = self.distinct
        return (distinct[code] for code in self.codes.tolist())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyOrders):
            return False
        if self.distinct == other.distinct:  # rows taken from one batch: compare the codes
            return bool(np.array_equal(self.codes, other.codes))
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable codes: compared, never hashed

    def take(self, indexes: Indexes) -> KeyOrders:
        return KeyOrders(self.distinct, self.codes[indexes])

    def replaced(self, at: Indexes, new: KeyOrders) -> KeyOrders:
        """These orders with rows `at` set to `new`'s (row i of `new` to row at[i])."""
        joined = concat_orders([self, new])
        codes = joined.codes[: len(self)].copy()
        codes[at] = joined.codes[len(self) :]
        return KeyOrders(joined.distinct, codes)


def concat_orders(parts: Sequence[KeyOrders]) -> KeyOrders:
    """The rows of `parts`, one after the other (their distinct orders merged)."""
    index: dict[KeyOrder, int] = {}
    codes = []
    for part in parts:
        mapping = np.asarray(
            [index.setdefault(order, len(index)) for order in part.distinct], np.int32
        )
        codes.append(mapping[part.codes] if len(mapping) else part.codes)
    joined = np.concatenate(codes) if codes else np.zeros(0, np.int32)
    return KeyOrders(list(index), joined.astype(np.int32, copy=False))


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows of one input, in input order; `rows` numbers them (1-based, header excluded).

    `payload` and `extra` hold one column per key any row has (null where a row lacks it).
    `order`, when set (JSON), lists per row its payload and extra keys in their file order;
    without it a row's keys follow the columns' order (CSV, where the header fixes them).
    """

    rows: Indexes
    identifier: Column
    timestamp: Column
    event_name: Column
    payload: Mapping[str, Column]
    extra: Mapping[str, Column]
    # Normalized error codes (null: none), as `records.resolve_error` gives them; the error
    # messages; the reader's reason for a broken row (null for the others). Given as arrays,
    # held as columns: rows taken are gathered only when read (the rounds and the writers
    # take rows many times, and mostly never read these).
    code_column: Column
    message_column: Column
    malformed_column: Column
    order: KeyOrders | None = field(default=None)

    def __post_init__(self) -> None:
        for name in ("code_column", "message_column", "malformed_column"):
            value = getattr(self, name)
            if not isinstance(value, Column):
                object.__setattr__(self, name, Column(value))

    @property
    def error_code(self) -> pa.Array:
        return self.code_column.text

    @property
    def error_message(self) -> pa.Array:
        return self.message_column.text

    @property
    def malformed(self) -> pa.Array:
        return self.malformed_column.text

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, indexes: Indexes) -> Batch:
        at = pa.array(indexes, pa.int64())
        composed = Composed(at)
        return Batch(
            self.rows[indexes],
            self.identifier.take(indexes, at, composed),
            self.timestamp.take(indexes, at, composed),
            self.event_name.take(indexes, at, composed),
            {k: c.take(indexes, at, composed) for k, c in self.payload.items()},
            {k: c.take(indexes, at, composed) for k, c in self.extra.items()},
            _taken(self.code_column, indexes, composed),
            _taken(self.message_column, indexes, composed),
            _taken(self.malformed_column, indexes, composed),
            self.order.take(indexes) if self.order is not None else None,
        )

    def with_fields(self, **changes: Any) -> Batch:
        return replace(self, **changes)

    def records(self) -> list[UsageRecord]:
        """The rows as records (for the few rows a rule handles one by one, and JSON output)."""
        cores = [c.values() for c in (self.identifier, self.timestamp, self.event_name)]
        payload = {k: _present_values(c) for k, c in self.payload.items()}
        extra = {k: _present_values(c) for k, c in self.extra.items()}
        codes, messages = self.error_code.to_pylist(), self.error_message.to_pylist()
        broken = self.malformed.to_pylist()
        orders = list(self.order) if self.order is not None else None
        out = []
        for i, number in enumerate(self.rows.tolist()):
            keys, extra_keys = orders[i] if orders is not None else (payload, extra)
            out.append(
                UsageRecord(
                    number,
                    _text_or_none(cores[0][i]),
                    cores[1][i],
                    _text_or_none(cores[2][i]),
                    {k: v for k in keys if (v := payload[k][i]) is not _ABSENT},
                    {k: v for k in extra_keys if (v := extra[k][i]) is not _ABSENT},
                    codes[i],
                    messages[i],
                    broken[i],
                )
            )
        return out


_ABSENT: Any = object()
# A column's value types when every value is text (or absent): no kinds to keep.
_TEXT_OR_NONE = frozenset({str, type(None)})
_TEXT_OR_ABSENT = frozenset({str, type(_ABSENT)})


def _taken(column: Column, indexes: Indexes, composed: Composed) -> Column:
    """Rows `indexes` of a column (no gather when every row is null: a file without
    malformed rows, or without error columns)."""
    if _all_null(column):
        return Column(pa.nulls(len(indexes), pa.string()))
    return column.take(indexes, composed.at, composed)


def _present_values(column: Column) -> list[object]:
    """Typed values, `_ABSENT` where the key is missing (a JSON null is a present None)."""
    texts = column.text.to_pylist()
    kinds = column.kinds.tolist() if column.kinds is not None else None
    if kinds is None:
        return [_ABSENT if t is None else t for t in texts]
    return [_ABSENT if t is None else value_of(t, k) for t, k in zip(texts, kinds, strict=True)]


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


# A batch's cells, its rows times its distinct keys, at most (a batch of 8,192 rows holds up
# to 64 keys). Every distinct key of a batch is a column of it, worked on by every check and
# writer: rows each naming keys of their own cost the square of their number in one batch
# (2,000 rows of 5 such keys took 20 s), so a batch is cut where its cells would pass this.
MAX_BATCH_CELLS = 1 << 19
# And where it would hold more distinct keys than this and `SPARSE` times as many as its widest
# row names: mostly empty columns, each costing its share of every check and writer whatever
# its rows, and more of them the more rows (rows of 5 keys of their own, 20,000 of them,
# through `meterfix remediate`: batches of ~320 rows and 1,600 keys, 35 s and a peak RSS of
# 211 MB; of ~100 rows and 512 keys, see the README). Rows that share their keys, however
# many, are cut by their cells alone.
MAX_BATCH_KEYS = 256
SPARSE = 4


def _past_bounds(rows: int, keys: int, widest: int) -> bool:
    """A batch of `rows` rows holding `keys` distinct keys, its widest row naming `widest`, is
    past the bounds (`MAX_BATCH_CELLS`, `MAX_BATCH_KEYS`)."""
    return rows * keys > MAX_BATCH_CELLS or (keys > MAX_BATCH_KEYS and keys > SPARSE * widest)


def record_batches(records: Iterable[UsageRecord], size: int) -> Iterator[Batch]:
    """Records as batches of at most `size` rows, within `MAX_BATCH_CELLS` and
    `MAX_BATCH_KEYS` (a row of more keys alone), `from_records` of each chunk."""
    chunk: list[UsageRecord] = []
    payload: set[str] = set()
    extra: set[str] = set()
    widest = 0
    for record in records:
        new = _new_keys(record.payload, payload) + _new_keys(record.extra, extra)
        wide = max(widest, len(record.payload) + len(record.extra))
        if chunk and _past_bounds(len(chunk) + 1, len(payload) + len(extra) + new, wide):
            yield from_records(chunk)
            chunk, payload, extra = [], set(), set()
            wide = len(record.payload) + len(record.extra)
        chunk.append(record)
        payload.update(record.payload)
        extra.update(record.extra)
        widest = wide
        if len(chunk) >= size:
            yield from_records(chunk)
            chunk, payload, extra, widest = [], set(), set(), 0
    if chunk:
        yield from_records(chunk)


def _new_keys(mapping: Mapping[str, object], seen: set[str]) -> int:
    return 0 if seen.issuperset(mapping) else len(mapping.keys() - seen)


def cell_spans(groups: npt.NDArray[np.int64], keys: Sequence[frozenset[str]]) -> list[range]:
    """Consecutive rows, as few spans as `MAX_BATCH_CELLS` and `MAX_BATCH_KEYS` allow (a row
    of more keys alone): `groups` gives each row's keys as its place in `keys`."""
    widest = max(map(len, keys), default=0)
    if not _past_bounds(len(groups), len(frozenset().union(*keys)), widest):
        return [range(len(groups))]
    spans, start = [], 0
    seen: set[int] = set()
    held: set[str] = set()
    widest = 0
    for row, group in enumerate(groups.tolist()):
        new = 0 if group in seen else len(keys[group] - held)
        wide = max(widest, len(keys[group]))
        if row > start and _past_bounds(row - start + 1, len(held) + new, wide):
            spans.append(range(start, row))
            start, seen, held, wide = row, set(), set(), len(keys[group])
        if group not in seen:
            seen.add(group)
            held |= keys[group]
        widest = wide
    spans.append(range(start, len(groups)))
    return spans


def from_records(records: Sequence[UsageRecord]) -> Batch:
    """A batch of records (JSON rows, or the rows a rule handled one by one), each row's key
    order kept (`Batch.order`)."""
    payloads = [r.payload for r in records]
    extras = [r.extra for r in records]
    return Batch(
        np.fromiter((r.row_number for r in records), np.int64, len(records)),
        Column.of([r.identifier for r in records]),
        Column.of([r.timestamp for r in records]),
        Column.of([r.event_name for r in records]),
        {k: _keyed(payloads, k) for k in _union(payloads)},
        {k: _keyed(extras, k) for k in _union(extras)},
        pa.array([r.error_code for r in records], pa.string()),
        pa.array([r.error_message for r in records], pa.string()),
        pa.array([r.malformed for r in records], pa.string()),
        KeyOrders.of((tuple(r.payload), tuple(r.extra)) for r in records),
    )


def _union(mappings: Iterable[Mapping[str, object]]) -> list[str]:
    """Every key of the mappings, in first-seen order (rows mostly share their keys: a row
    adding none is one comparison, no copy; 390 -> 180 ns a row)."""
    keys: dict[str, None] = {}
    for mapping in mappings:
        if not keys.keys() >= mapping.keys():
            keys.update(dict.fromkeys(mapping))
    return list(keys)


def _keyed(mappings: Sequence[Mapping[str, object]], key: str) -> Column:
    """One key of every row (absent where a row lacks it; a JSON null is present)."""
    values = [m.get(key, _ABSENT) for m in mappings]
    if set(map(type, values)) <= _TEXT_OR_ABSENT:  # CSV rows, most JSON keys
        return Column(pa.array([None if v is _ABSENT else v for v in values], pa.string()))
    texts: list[str | None] = []
    kinds: list[int] = []
    for value in values:
        text, kind = (None, Kind.TEXT) if value is _ABSENT else present_text(value)
        texts.append(text)
        kinds.append(kind)
    array = np.asarray(kinds, np.uint8)
    return Column(pa.array(texts, pa.string()), array if array.any() else None)


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """Batches with possibly different key columns, one after the other."""
    if len(batches) == 1:
        return batches[0]
    payload = _union(b.payload for b in batches)
    extra = _union(b.extra for b in batches)
    ordered = any(b.order is not None for b in batches)
    return Batch(
        np.concatenate([b.rows for b in batches]),
        concat_columns([b.identifier for b in batches]),
        concat_columns([b.timestamp for b in batches]),
        concat_columns([b.event_name for b in batches]),
        {k: concat_columns([_key(b.payload, k, len(b)) for b in batches]) for k in payload},
        {k: concat_columns([_key(b.extra, k, len(b)) for b in batches]) for k in extra},
        pa.concat_arrays([b.error_code for b in batches]),
        pa.concat_arrays([b.error_message for b in batches]),
        pa.concat_arrays([b.malformed for b in batches]),
        concat_orders([key_orders(b) for b in batches]) if ordered else None,
    )


def interleaved(batch: Batch, kept: Indexes, other: Batch, placed: Indexes) -> Batch:
    """Rows `kept` of `batch` and the rows of `other` (row i standing for `batch` row
    `placed[i]`), in `batch` order; `kept` and `placed` ascending and disjoint. A column of
    `other` that is `batch`'s own, taken at `placed` (no rule touched it), is one gather from
    `batch`'s, when it is read (`Column.take`); another is gathered at once from the two
    columns one after the other. Batches with key orders are concatenated and sorted
    (`concat_batches`)."""
    if batch.order is not None or other.order is not None:
        both = concat_batches([batch.take(kept), other])
        return both.take(np.argsort(np.concatenate([kept, placed]), kind="stable"))
    weave = Interleave(len(batch), kept, placed)
    n = len(batch)

    def keyed(mine: Mapping[str, Column], theirs: Mapping[str, Column]) -> dict[str, Column]:
        return {
            k: weave.column(_key(mine, k, n), _key(theirs, k, len(placed)))
            for k in _union([mine, theirs])
        }

    return Batch(
        batch.rows[weave.rows],
        weave.column(batch.identifier, other.identifier),
        weave.column(batch.timestamp, other.timestamp),
        weave.column(batch.event_name, other.event_name),
        keyed(batch.payload, other.payload),
        keyed(batch.extra, other.extra),
        weave.column(batch.code_column, other.code_column),
        weave.column(batch.message_column, other.message_column),
        weave.column(batch.malformed_column, other.malformed_column),
    )


class Interleave:
    """Rows `kept` of a column and the rows of another (row i standing for the first's row
    `placed[i]`), in the first column's order (`rows`); `kept` and `placed` ascending and
    disjoint (`interleaved`, a column at a time)."""

    def __init__(self, length: int, kept: Indexes, placed: Indexes) -> None:
        self.length, self.kept, self.placed = length, kept, placed
        self.rows = np.sort(np.concatenate([kept, placed]))
        self.at = pa.array(self.rows, pa.int64())
        self._composed = Composed(self.at)
        self._taken_placed = Composed(pa.array(placed, pa.int64()))
        self._spliced: Indexes | None = None

    def column(self, mine: Column, theirs: Column) -> Column:
        """The rows of `mine` and `theirs` as one column: a take of `mine` when `theirs` is
        rows of it no rule changed, else gathered now from both."""
        if _taken_from(theirs, mine, self._taken_placed):
            return mine.take(self.rows, self.at, self._composed)
        if _all_null(mine) and _all_null(theirs):  # no malformed rows, no error columns
            return Column(pa.nulls(len(self.rows), pa.string()))
        spliced = self._splice()
        kinds = None
        if mine.kinds is not None or theirs.kinds is not None:
            kinds = np.concatenate([mine.kind_array(), theirs.kind_array()])[spliced]
        whole = pa.concat_arrays([as_string(mine.text), as_string(theirs.text)])
        return Column(whole.take(pa.array(spliced, pa.int64())), kinds)  # `whole` not kept

    def sources(self, mine: Column, theirs: Column) -> list[CellSource]:
        """Where each row of `column(mine, theirs)` reads its cell, nothing gathered: the
        arrays the two columns' cells are in (`Column.cell_rows`), with the rows and places
        that read from each."""
        array, places = mine.cell_rows()
        if _taken_from(theirs, mine, self._taken_placed):
            return [(array, np.arange(len(self.rows), dtype=np.int64), places[self.rows])]
        kept_lines = np.searchsorted(self.rows, self.kept)
        placed_lines = np.searchsorted(self.rows, self.placed)
        other, other_places = theirs.cell_rows()
        if other is array:
            lines = np.concatenate([kept_lines, placed_lines])
            return [(array, lines, np.concatenate([places[self.kept], other_places]))]
        return [(array, kept_lines, places[self.kept]), (other, placed_lines, other_places)]

    def _splice(self) -> Indexes:
        """Each row's place in the two columns one after the other."""
        if self._spliced is None:
            spliced = np.arange(self.length, dtype=np.int64)
            spliced[self.placed] = self.length + np.arange(len(self.placed), dtype=np.int64)
            self._spliced = spliced[self.rows]
        return self._spliced


def _all_null(column: Column) -> bool:
    """Whether a column is known to be null throughout, without gathering it."""
    known = column._text if column._text is not None else column._base
    return known is not None and known.null_count == len(known) and column.kinds is None


def _taken_from(column: Column, source: Column, placed: Composed) -> bool:
    """Whether `column` is rows `placed.at` of `source` as it is (by where it came from, read
    or not: no rule replaced it)."""
    if column._base is None or column._at is None:
        return False
    if source._base is not None and source._at is not None:
        base, wanted = source._base, placed.of(source._at)
    elif source._text is not None:
        base, wanted = source._text, placed.at
    else:
        return False
    if column._base is not base or len(column._at) != len(wanted):
        return False
    if column.kinds is not None or source.kinds is not None:
        indexes = np.asarray(placed.at.to_numpy(zero_copy_only=False), np.int64)
        if not np.array_equal(column.kind_array(), source.kind_array()[indexes]):
            return False
    return column._at is wanted or bool(column._at.equals(wanted))


def _key(columns: Mapping[str, Column], key: str, length: int) -> Column:
    return columns.get(key) or Column.absent(length)


def key_orders(batch: Batch) -> KeyOrders:
    """Each row's keys: its own order, or the columns' order of the keys it has. A row's
    presence across the columns is one pattern (a bit per column, up to 63 columns in one
    number); the few distinct patterns a batch has are made orders once each, coded in the
    order rows first show them."""
    if batch.order is not None:
        return batch.order
    columns = [*batch.payload.values(), *batch.extra.values()]
    if not columns:
        return KeyOrders.same(((), ()), len(batch))
    present = np.column_stack([column.present() for column in columns])
    if len(columns) < 64:
        bits = np.left_shift(np.int64(1), np.arange(len(columns), dtype=np.int64))
        _, first, of_row = np.unique(present @ bits, return_index=True, return_inverse=True)
    else:
        _, first, of_row = np.unique(present, axis=0, return_index=True, return_inverse=True)
    by_first = np.argsort(first, kind="stable")
    code = np.empty(len(first), np.int32)
    code[by_first] = np.arange(len(first), dtype=np.int32)
    payload, extra = list(batch.payload), list(batch.extra)
    distinct = []
    for pattern in present[first[by_first]].tolist():
        distinct.append(
            (
                tuple(k for k, there in zip(payload, pattern, strict=False) if there),
                tuple(k for k, there in zip(extra, pattern[len(payload) :], strict=True) if there),
            )
        )
    return KeyOrders(distinct, code[of_row.reshape(-1)])
