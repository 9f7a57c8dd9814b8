"""Changes of one rule to one field made one after the other are merged into one (`rounds`),
and the audit's order (lines sorted by row, stably) is what it was without merging."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from remediation.core.columns import Column, Kind
from remediation.core.rounds import _merged
from remediation.core.rules import Changes


def _change(rows: list[int], rule: str, field: str, tag: str) -> Changes:
    before = Column(pa.array([f"{tag}{r}" for r in rows], pa.string()))
    after = Column(pa.array([str(r) for r in rows]), np.full(len(rows), Kind.INT, np.uint8))
    return Changes(np.asarray(rows, np.int64), rule, field, before, after)


def _audit_order(changes: list[Changes]) -> list[tuple[int, str, str, str, str, int]]:
    """The entries as the audit writes them: sorted by row, stably."""
    entries: list[tuple[int, str, str, str, str, int]] = []
    for change in changes:
        rules = [change.rule] * len(change) if isinstance(change.rule, str) else change.rule
        fields = [change.field] * len(change) if isinstance(change.field, str) else change.field
        kinds = change.after.kind_array().tolist()
        entries += zip(
            change.at.tolist(),
            rules,
            fields,
            change.before.text.to_pylist(),
            change.after.text.to_pylist(),
            kinds,
            strict=True,
        )
    return sorted(entries, key=lambda entry: entry[0])


def test_consecutive_lanes_of_one_rule_become_one_change() -> None:
    changes = [
        _change([4, 1], "normalize_value", "payload.value", "a"),
        _change([0, 7], "normalize_value", "payload.value", "b"),
        _change([1], "timestamp_ms_to_s", "timestamp", "c"),
        _change([3], "normalize_value", "payload.value", "d"),
        _change([2, 5], "normalize_value", "payload.units", "e"),
    ]
    merged = _merged(changes)
    assert [(c.rule, c.field, c.at.tolist()) for c in merged] == [
        ("normalize_value", "payload.value", [4, 1, 0, 7]),
        ("timestamp_ms_to_s", "timestamp", [1]),
        ("normalize_value", "payload.value", [3]),  # not merged past another rule's change
        ("normalize_value", "payload.units", [2, 5]),
    ]
    assert merged[0].before.text.to_pylist() == ["a4", "a1", "b0", "b7"]
    assert merged[0].after.kind_array().tolist() == [Kind.INT] * 4
    assert _audit_order(merged) == _audit_order(changes)


def test_row_by_row_changes_are_kept_as_they_are() -> None:
    rowwise = Changes(
        np.asarray([2, 2], np.int64),
        ["rename_key", "normalize_value"],
        ["payload", "payload.value"],
        Column(pa.array(["x", "1,0"])),
        Column(pa.array(["y", "10"])),
    )
    changes = [_change([2], "normalize_value", "payload.value", "a"), rowwise]
    merged = _merged(changes)
    assert [c.at.tolist() for c in merged] == [[2], [2, 2]]
    assert merged[1] is rowwise


_RULES = st.sampled_from([("r1", "f1"), ("r1", "f2"), ("r2", "f1")])


@given(st.lists(st.tuples(_RULES, st.lists(st.integers(0, 9), max_size=4)), max_size=8))
def test_the_audit_order_is_kept(spec: list[tuple[tuple[str, str], list[int]]]) -> None:
    changes = [_change(rows, rule, field, f"t{n}.") for n, ((rule, field), rows) in enumerate(spec)]
    merged = _merged(changes)
    assert _audit_order(merged) == _audit_order(changes)
    pairs = [(c.rule, c.field) for c in merged]
    assert all(a != b for a, b in itertools.pairwise(pairs))  # nothing left to merge
