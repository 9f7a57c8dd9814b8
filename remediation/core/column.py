"""One field of a batch's rows held as a column: its text and, for JSON, each row's kind.

Every field is text in an Arrow string array (null: the field is absent). A JSON value that is
not a string keeps its JSON text and a `kind` per row (`valuekinds`), so a number stays a number
on output and a rule can tell `"12"` from `12`; CSV columns have no kinds (every cell is text).
Apart from the batch (`batch`): a column knows no row number and no key, only its values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.valuekinds import Kind, typed_text, value_of

# Runs a function on another thread (`concurrent.futures.Executor.submit`): where a reader
# makes its next batch, or parses or matches its next block, while the engine decides one.
Ahead = Callable[..., "Future[Any]"]

Indexes = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


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
        "_inherited",
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
        self._inherited: _Inherited = ()
        self.kinds = kinds
        # No value holds a control character nor more than this many bytes, when known (the
        # cells of a CSV block measured as it was read: `csvwidths`); rows taken keep it.
        self.plain_within: int | None = None

    @classmethod
    def taken(cls, base: pa.Array, at: pa.Array, kinds: npt.NDArray[np.uint8] | None) -> Column:
        column = cls.__new__(cls)
        column._text, column._base, column._at = None, base, at
        column._length, column._marks, column.kinds = len(at), {}, kinds
        column._inherited = ()
        column._filled, column.plain_within = None, None
        return column

    def mark(self, name: str, compute: Callable[[Column], npt.NDArray[Any]]) -> npt.NDArray[Any]:
        """A per-row fact about this column's values (its lengths, its control characters),
        computed once: rows taken from this column read it from the column they were taken
        from, when it is known there (`take`)."""
        found = self._marks.get(name)
        if found is None:
            found = self._inherited_mark(name)
            found = self._marks[name] = compute(self) if found is None else found
        return found

    def _inherited_mark(self, name: str) -> npt.NDArray[Any] | None:
        """Mark `name` of the columns this one was taken from, nearest first, at this one's
        rows (None when none of them has it)."""
        for depth, (marks, _) in enumerate(self._inherited):
            found = marks.get(name)
            if found is not None:
                for _, rows in reversed(self._inherited[: depth + 1]):
                    found = found[rows]
                return found
        return None

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
        # the marks are read from this column's when asked for (most never are: a batch of
        # rows naming keys of their own has hundreds of columns, each taken in every round)
        column._inherited = ((self._marks, indexes), *self._inherited)
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


def as_string(array: pa.Array) -> pa.Array:
    """`array` as pa.string() (a cast to the type it has still costs a kernel call)."""
    return array if pa.types.is_string(array.type) else array.cast(pa.string())


def stacked_texts(columns: Sequence[Column]) -> pa.Array:
    """The texts of `columns` one after the other (column i's rows after those of the columns
    before it), as pa.string(): columns taken and not read yet are gathered from their first
    columns in the one take, not a take each (a batch of rows naming keys of their own has
    hundreds of columns, each read by the JSON writer)."""
    sources: list[pa.Array] = []
    places: list[Indexes] = []
    rows_of: dict[int, Indexes] = {}  # by id(column._at): the columns of a batch share theirs
    start = 0
    for column in columns:
        if column._text is None and column._base is not None and column._at is not None:
            source = column._base
            at = rows_of.get(id(column._at))
            if at is None:
                at = rows_of[id(column._at)] = np.asarray(
                    column._at.to_numpy(zero_copy_only=False), np.int64
                )
        else:
            source = column.text
            at = np.arange(len(source), dtype=np.int64)
        sources.append(as_string(source))
        places.append(at + start)
        start += len(source)
    if not sources:
        return pa.array([], pa.string())
    every = np.concatenate(places)
    return pa.concat_arrays(sources).take(pa.array(every, pa.int64()))


def concat_columns(columns: Sequence[Column]) -> Column:
    text = pa.concat_arrays([as_string(c.text) for c in columns])
    if all(c.kinds is None for c in columns):
        return Column(text)
    return Column(text, np.concatenate([c.kind_array() for c in columns]))


# The marks of the columns a column was taken from, nearest first, each with the rows taken
# from it (`Column.take`).
_Inherited = tuple[tuple[dict[str, npt.NDArray[Any]], Indexes], ...]
# A column's value types when every value is text (or absent): no kinds to keep.
_TEXT_OR_NONE = frozenset({str, type(None)})
