"""`Column.mark`: a per-row fact about a column's values is computed once, and a column taken
from another reads it from there, at its own rows, when asked for (rows naming payload keys
of their own make hundreds of columns a batch, each taken in every round: copying every
mark at every take was a tenth of such a run)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from remediation.core.column import Column


def _lengths(counted: list[int]) -> Any:
    def compute(column: Column) -> Any:
        counted.append(len(column))
        return np.asarray([len(t or "") for t in column.text.to_pylist()], np.int64)

    return compute


def _column(n: int) -> Column:
    return Column(pa.array([("x" * (i % 7)) or None for i in range(n)], pa.string()))


@given(
    n=st.integers(1, 30),
    picks=st.lists(st.integers(0, 29), max_size=30),
    again=st.lists(st.integers(0, 29), max_size=30),
    before=st.booleans(),
)
def test_a_taken_column_reads_its_marks_where_it_was_taken_from(
    n: int, picks: list[int], again: list[int], before: bool
) -> None:
    column = _column(n)
    counted: list[int] = []
    if before:
        column.mark("lengths", _lengths(counted))
    first = np.asarray([p % n for p in picks], np.int64)
    taken = column.take(first)
    second = np.asarray([a % len(first) for a in again] if len(first) else [], np.int64)
    twice = taken.take(second)
    if not before:  # marked after the takes: known to them all the same
        column.mark("lengths", _lengths(counted))
    got = twice.mark("lengths", _lengths(counted))
    want = [len(t or "") for t in twice.text.to_pylist()]
    assert got.tolist() == want
    assert counted == [n]  # computed once, on the first column


def test_a_mark_no_column_it_was_taken_from_has_is_computed_for_it_alone() -> None:
    column = _column(10)
    taken = column.take(np.array([9, 3, 3]))
    counted: list[int] = []
    assert taken.mark("lengths", _lengths(counted)).tolist() == [2, 3, 3]
    assert taken.mark("lengths", _lengths(counted)).tolist() == [2, 3, 3]
    assert counted == [3]
    column.mark("lengths", _lengths(counted))  # the first column's own, computed for it
    assert counted == [3, 10]
