"""The payload and extra columns few rows of a batch hold ("rare": rows each naming keys of their
own) cut out of their lines' pieces together (`rare_columns`), apart from the other columns
(`jsonlcutout.cut_out`), each of which takes a dozen Arrow calls of its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.columns import Column, Kind
from remediation.core.jsonlbatch import dotted, in_range, mask
from remediation.core.jsonllayouts import MAX_NUMBER_CHARS, Leaf

TRIMMED = ":, }"  # around a number, true, false or null in its piece of a line split at '"'


# A payload or extra column of at most this share of a batch's rows is "rare" (rows each
# naming keys of their own: one column per key, each in a row or a few): cut out with the
# other rare columns at once (`rare_columns`), not with a dozen Arrow calls of its own.
RARE_SHARE = 0.25


def is_rare(leaves: dict[int, Leaf], counts: np.ndarray[Any, Any], rows: int) -> bool:
    return int(counts[list(leaves)].sum()) <= RARE_SHARE * rows


def rare_columns(
    rare: list[tuple[tuple[str, str], dict[int, Leaf]]],
    codes: np.ndarray[Any, Any],
    counts: np.ndarray[Any, Any],
    starts: np.ndarray[Any, Any],
    pieces: pa.Array,
    keep: np.ndarray[Any, Any],
) -> list[tuple[tuple[str, str], Column]]:
    """The `rare` columns ((group, key), each layout's leaf), as `_gathered` and `_column`
    make each: their values cut out of the pieces together (each row with a value of one is
    one cell), then laid out as a grid of a column's rows after another's, each column a slice
    of it. Rows with a number the line reader reads another way are taken out of `keep`."""
    n = len(codes)
    rows, columns, piece, kinds = _rare_cells(rare, codes, counts)
    texts = pieces.take(pa.array(starts[rows] + piece))
    bare = kinds != Kind.TEXT  # a number, true, false or null: not between quotes
    if bare.any():
        texts = _bare_values(texts, bare, kinds, rows, keep)
    grid = np.full(len(rare) * n, -1, np.int64)
    grid[columns * n + rows] = np.arange(len(rows))
    text_grid = texts.take(pa.array(grid, mask=grid < 0))
    kind_grid = np.zeros((len(rare), n), np.uint8)
    kind_grid[columns, rows] = kinds
    typed = np.asarray(kind_grid.any(axis=1), bool)
    return [
        (name, Column(text_grid.slice(at * n, n), kind_grid[at] if typed[at] else None))
        for at, (name, _) in enumerate(rare)
    ]


_Cells = tuple[
    np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]
]


def _rare_cells(
    rare: list[tuple[tuple[str, str], dict[int, Leaf]]],
    codes: np.ndarray[Any, Any],
    counts: np.ndarray[Any, Any],
) -> _Cells:
    """Every (column, row) of the `rare` columns holding a value, by column, then row: each
    cell's row, column, piece (of its line's pieces) and kind."""
    column_of, layout_of, piece_of, kind_of = [], [], [], []
    for at, (_, leaves) in enumerate(rare):
        for layout, leaf in leaves.items():
            column_of.append(at)
            layout_of.append(layout)
            piece_of.append(leaf.piece)
            kind_of.append(int(leaf.kind))
    # every (column, row) holding a value: each leaf repeated for its layout's rows
    order = np.argsort(codes, kind="stable")
    first = np.cumsum(counts) - counts
    leaf_layout = np.asarray(layout_of, np.int64)
    repeats = counts[leaf_layout]
    leaf_at = np.repeat(np.arange(len(leaf_layout)), repeats)
    within = np.arange(len(leaf_at)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    rows = order[first[leaf_layout][leaf_at] + within]
    columns = np.asarray(column_of, np.int64)[leaf_at]
    cells = np.lexsort((rows, columns))  # by column, then row: each column's cells in a run
    rows, columns, leaf_at = rows[cells], columns[cells], leaf_at[cells]
    kinds = np.asarray(kind_of, np.uint8)[leaf_at]
    return rows, columns, np.asarray(piece_of, np.int64)[leaf_at], kinds


def _bare_values(
    texts: pa.Array,
    bare: np.ndarray[Any, Any],
    kinds: np.ndarray[Any, Any],
    rows: np.ndarray[Any, Any],
    keep: np.ndarray[Any, Any],
) -> pa.Array:
    """The cells' texts with the bare ones (not between quotes) trimmed; an integer's kind
    made a float where it is one, and the rows of a number the line reader reads another way
    taken out of `keep`."""
    texts = pc.if_else(pa.array(bare), pc.utf8_trim(texts, TRIMMED), texts)
    numbers = kinds == Kind.INT
    if numbers.any():
        fine = ~numbers | mask(pc.less_equal(pc.utf8_length(texts), MAX_NUMBER_CHARS))
        fine &= ~numbers | in_range(texts)
        keep[rows[~fine]] = False
        kinds[numbers & dotted(texts)] = Kind.FLOAT
    return texts
