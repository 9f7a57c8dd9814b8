"""A layout's pattern matched against a batch's lines by Arrow, and such a match under way on
`ahead`'s thread: the one step of a JSON Lines read (`jsonlread`) that may run on another thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_Matched = tuple[np.ndarray[Any, Any], pa.Array]  # lines of a layout, and their pieces


class Started(NamedTuple):
    """A match of `candidates` against `pattern` under way; `result` waits for it."""

    pattern: str
    candidates: np.ndarray[Any, Any]
    result: Callable[[], _Matched]

    def serves(self, pattern: str, candidates: np.ndarray[Any, Any]) -> bool:
        return pattern == self.pattern and np.array_equal(candidates, self.candidates)


def matched(pattern: str, text: pa.Array, candidates: np.ndarray[Any, Any]) -> _Matched:
    """The `candidates` lines that match `pattern`, and those lines split at their quotes:
    Arrow kernels that let go of the GIL (this runs on `ahead`'s thread too)."""
    subset = text if len(candidates) == len(text) else text.take(pa.array(candidates))
    matched = pc.match_substring_regex(subset, pattern)
    rows: np.ndarray[Any, Any] = candidates[
        np.asarray(matched.to_numpy(zero_copy_only=False), bool)
    ]
    if not len(rows):
        return rows, pa.array([], pa.string())
    lines = text if len(rows) == len(text) else text.take(pa.array(rows))
    return rows, pc.list_flatten(pc.split_pattern(lines, '"'))
