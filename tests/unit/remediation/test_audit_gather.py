"""Audit lines gathered from one pool of texts (`audit._Gather`): for any blocks of lines made
of constants and values taken from arrays, the lines come out in row order (stably: a block
added first comes first within a row), each the texts of its parts one after the other, as
Python joins them, whatever the slice size; a part with no text (a null) or a position past
its array is refused, never written as some other value."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remediation.core.audit import _Gather, array_bytes

TEXTS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)


@st.composite
def blocks(draw: Any) -> list[tuple[list[int], list[Any]]]:
    """Blocks of lines: each its rows, and parts that are a constant or (texts, positions)."""
    arrays = [draw(st.lists(TEXTS, min_size=1, max_size=8)) for _ in range(draw(st.integers(1, 3)))]
    found = []
    for _ in range(draw(st.integers(1, 4))):
        lines = draw(st.integers(1, 12))
        rows = draw(st.lists(st.integers(0, 15), min_size=lines, max_size=lines))
        parts: list[Any] = []
        for _ in range(draw(st.integers(1, 6))):
            if draw(st.booleans()):
                parts.append(draw(TEXTS))
            else:
                source = draw(st.sampled_from(arrays))
                at = st.integers(0, len(source) - 1)
                parts.append((source, draw(st.lists(at, min_size=lines, max_size=lines))))
        found.append((rows, parts))
    return found


def _gathered(found: list[tuple[list[int], list[Any]]], slice_lines: int) -> str:
    lines = _Gather()
    arrays: dict[int, pa.Array] = {}  # one Arrow array per source list, as a batch shares one
    for rows, parts in found:
        made = []
        for part in parts:
            if isinstance(part, str):
                made.append(part)
            else:
                source, positions = part
                array = arrays.setdefault(id(source), pa.array(source, pa.string()))
                made.append((array, np.asarray(positions, np.int64)))
        lines.add(np.asarray(rows, np.int64), made)
    return b"".join(bytes(array_bytes(text)) for text in lines.texts(slice_lines)).decode()


def _joined(found: list[tuple[list[int], list[Any]]]) -> str:
    lines = []
    for order, (rows, parts) in enumerate(found):
        for line, row in enumerate(rows):
            text = "".join(p if isinstance(p, str) else p[0][p[1][line]] for p in parts)
            lines.append((row, order, line, text))
    return "".join(text for *_, text in sorted(lines))


@settings(max_examples=200, deadline=None)
@given(blocks(), st.integers(1, 20))
def test_gathered_lines_are_the_lines_joined_in_row_order(
    found: list[tuple[list[int], list[Any]]], slice_lines: int
) -> None:
    assert _gathered(found, slice_lines) == _joined(found)


def test_a_part_with_a_null_or_a_position_past_its_array_is_refused() -> None:
    rows = np.arange(2, dtype=np.int64)
    holed = _Gather()
    holed.add(rows, ["a", (pa.array(["x", None]), rows)])
    with pytest.raises(ValueError, match="nulls"):
        list(holed.texts(10))
    for positions in ([0, 2], [-1, 0]):
        past = _Gather()
        past.add(rows, [(pa.array(["x", "y"]), np.asarray(positions, np.int64)), "b"])
        with pytest.raises(IndexError, match="past its array"):
            list(past.texts(10))
