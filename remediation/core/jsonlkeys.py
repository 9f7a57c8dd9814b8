"""The keys each line of a batch names (`row_keys`), by which its lines are cut into batches of
bounded cells (`batchbounds.cell_spans`), and the parts within one (`within`): found from what
matched the lines or from their shapes, apart from their read (`jsonlread`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from remediation.core.columns import Batch
from remediation.core.jsonllines import line_keys
from remediation.core.jsonlshapes import LineShapes, merged_shapes, shape_keys, shape_lines


class Shaping(NamedTuple):
    """The shapes of `lines` (places in a cut), being found; `result` waits for them."""

    lines: np.ndarray[Any, Any]
    result: Callable[[], LineShapes]


def row_keys(
    matched: list[tuple[np.ndarray[Any, Any], Batch]],
    text: pa.Array,
    shaping: Shaping | None = None,
) -> tuple[np.ndarray[Any, Any], list[frozenset[str]], LineShapes | None]:
    """Each line's keys, as its place in the key sets: a layout's columns for the lines it
    matched, the keys of its shape for a line of the others that has one (`shape_keys`), the
    keys the rest name (`line_keys`); and the others' shapes, for their read (`shaping`: those
    of some of them, being found)."""
    groups = np.empty(len(text), np.int64)
    others = np.ones(len(text), bool)
    keys: list[frozenset[str]] = []
    for rows, batch in matched:
        groups[rows], others[rows] = len(keys), False
        keys.append(frozenset(f'"{key}"' for key in [*batch.payload, *batch.extra]))
    if not others.any():
        return groups, keys, None
    lines = np.flatnonzero(others)
    shaped = _shapes_of(text, lines, shaping)
    fit = shaped.fits[lines]
    groups[lines[fit]] = len(keys) + shaped.codes[lines[fit]]
    keys += [shape_keys(shape) for shape in shaped.shapes]
    rest = lines[~fit]
    if len(rest):
        places, named = line_keys(text.take(pa.array(rest)))
        groups[rest] = len(keys) + places
        keys += named
    return groups, keys, shaped


def _shapes_of(text: pa.Array, lines: np.ndarray[Any, Any], shaping: Shaping | None) -> LineShapes:
    """The shapes of `lines`: those `shaping` found, and the others' found here."""
    if shaping is None:
        return shape_lines(text, lines)
    found = shaping.result()
    looked = np.zeros(len(text), bool)
    looked[shaping.lines] = True
    missing = lines[~looked[lines]]
    if not len(missing):
        return found
    return merged_shapes(found, shape_lines(text, missing))


def within(
    matched: list[tuple[np.ndarray[Any, Any], Batch]], span: range
) -> list[tuple[np.ndarray[Any, Any], Batch]]:
    """The rows of the parts in `span` (each part's rows ascending)."""
    parts = []
    for rows, batch in matched:
        start, stop = np.searchsorted(rows, [span.start, span.stop]).tolist()
        if start == 0 and stop == len(rows):
            parts.append((rows, batch))
        elif stop > start:
            parts.append((rows[start:stop], batch.take(np.arange(start, stop))))
    return parts
