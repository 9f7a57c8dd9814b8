"""Batches joined: one after the other (`concat_batches`), or the written rows of a batch woven
back into its order (`interleaved`, a column at a time: `Interleave`). Apart from the batch
(`batch`): only the deciding and the writers join batches, and a column of rows no rule changed
is known here by where it came from (`Column.take`), not gathered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from remediation.core.batch import Batch, all_null, key_orders, key_union
from remediation.core.column import Column, Composed, Indexes, as_string, concat_columns
from remediation.core.csvtext import CellSource
from remediation.core.keyorders import KeyOrders, concat_orders


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """Batches with possibly different key columns, one after the other."""
    if len(batches) == 1:
        return batches[0]
    payload = key_union(b.payload for b in batches)
    extra = key_union(b.extra for b in batches)
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
    columns one after the other. Rows' key orders (JSON) are woven the same way, as codes
    (`_woven_orders`)."""
    weave = Interleave(len(batch), kept, placed)
    n = len(batch)

    def keyed(mine: Mapping[str, Column], theirs: Mapping[str, Column]) -> dict[str, Column]:
        return {
            k: weave.column(_key(mine, k, n), _key(theirs, k, len(placed)))
            for k in key_union([mine, theirs])
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
        _woven_orders(batch, kept, other, placed),
    )


def _woven_orders(batch: Batch, kept: Indexes, other: Batch, placed: Indexes) -> KeyOrders | None:
    """The key orders of `interleaved`'s rows (None when neither batch has any: a CSV's whose
    rules kept every row's keys in the columns' order)."""
    if batch.order is None and other.order is None:
        return None
    both = concat_orders([key_orders(batch).take(kept), key_orders(other)])
    return both.take(np.argsort(np.concatenate([kept, placed]), kind="stable"))


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
        if all_null(mine) and all_null(theirs):  # no malformed rows, no error columns
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
