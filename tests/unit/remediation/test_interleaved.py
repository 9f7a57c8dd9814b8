"""`batchjoin.interleaved`: the written rows of a batch (its valid rows and its corrected ones,
in file order) are what concatenating and sorting gives, and a column no rule changed is
taken from the batch's own in one gather."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from remediation.core.batchjoin import Interleave, concat_batches, interleaved
from remediation.core.columns import Batch, Column, Kind
from remediation.core.csvtext import csv_lines, csv_rows
from remediation.core.keyorders import KeyOrders
from remediation.core.rules.base import set_column


def _ordered(batch: Batch, flips: list[bool]) -> Batch:
    """`batch` with key orders of its own (JSON): rows' payload keys in one order or the
    other, their other keys as the columns have them."""
    extra = tuple(batch.extra)
    orders = [(("c", "v") if flip else ("v", "c"), extra) for flip in flips[: len(batch)]]
    return batch.with_fields(order=KeyOrders.of(orders))


def _batch(n: int, kinds: bool) -> Batch:
    def column(name: str) -> Column:
        spelt = [str(i) if name == "v" else f"{name}{i}" for i in range(n)]
        texts = pa.array([text if i % 5 else None for i, text in enumerate(spelt)], pa.string())
        typed = np.full(n, Kind.INT, np.uint8) if kinds and name == "v" else None
        return Column(texts, typed)

    return Batch(
        np.arange(100, 100 + n, dtype=np.int64),
        column("id"),
        column("ts"),
        column("ev"),
        {"v": column("v"), "c": column("c")},
        {"note": column("note")},
        pa.array([f"code{i % 3}" for i in range(n)], pa.string()),
        pa.nulls(n, pa.string()),
        pa.nulls(n, pa.string()),
    )


def _rows(batch: Batch) -> list[tuple[object, ...]]:
    payload = {k: c.values() for k, c in batch.payload.items()}
    extra = {k: c.values() for k, c in batch.extra.items()}
    return [
        (
            int(batch.rows[i]),
            batch.identifier.values()[i],
            batch.timestamp.values()[i],
            tuple(sorted((k, v[i]) for k, v in payload.items())),
            tuple(sorted((k, v[i]) for k, v in extra.items())),
            batch.error_code[i].as_py(),
            batch.malformed[i].as_py(),
        )
        for i in range(len(batch))
    ]


@given(
    n=st.integers(1, 40),
    picks=st.lists(st.booleans(), min_size=40, max_size=40),
    kinds=st.booleans(),
    added=st.booleans(),
    flips=st.none() | st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_the_written_rows_are_the_sorted_concatenation(
    n: int, picks: list[bool], kinds: bool, added: bool, flips: list[bool] | None
) -> None:
    """Whatever the columns (and the rows' key orders, JSON's: `flips`)."""
    batch = _batch(n, kinds) if flips is None else _ordered(_batch(n, kinds), flips)
    placed = np.flatnonzero(np.asarray(picks[:n]))
    kept = np.flatnonzero(~np.asarray(picks[:n]))
    fixed = batch.take(placed)  # what the rounds hand back: some columns changed
    at = np.arange(0, len(placed), 2, dtype=np.int64)
    new = Column(pa.array([str(1000 + i) for i in range(len(at))], pa.string()))
    payload = dict(fixed.payload, v=set_column(fixed.payload["v"], at, new))
    if added:
        payload["alias"] = Column(pa.array(["x"] * len(placed), pa.string()))
    fixed = fixed.with_fields(timestamp=set_column(fixed.timestamp, at, new), payload=payload)
    got = interleaved(batch, kept, fixed, placed)
    both = concat_batches([batch.take(kept), fixed])
    want = both.take(np.argsort(np.concatenate([kept, placed]), kind="stable"))
    assert _rows(got) == _rows(want)
    assert got.order == want.order
    assert list(got.payload) == list(want.payload)
    for key, column in got.payload.items():  # None and all TEXT are one (`kind_array`)
        assert column.kind_array().tolist() == want.payload[key].kind_array().tolist()


def test_a_column_no_rule_changed_is_one_gather_from_the_batch() -> None:
    batch = _batch(10, False)
    placed, kept = np.array([1, 4, 7]), np.array([0, 2, 3, 5, 6, 8, 9])
    fixed = batch.take(np.array([1, 2, 4, 7])).take(np.array([0, 2, 3]))  # a take of a take
    assert fixed.identifier.text.to_pylist() == ["id1", "id4", "id7"]  # read: still known
    got = interleaved(batch, kept, fixed, placed)
    assert got.identifier._base is batch.identifier.text
    assert got.identifier.text.to_pylist() == batch.identifier.text.to_pylist()


def test_a_json_column_no_rule_changed_is_one_gather_from_the_batch() -> None:
    """Rows with key orders of their own (JSON) too: before, their written rows were
    concatenated and sorted, every column gathered twice, hundreds a batch for rows naming
    keys of their own; the orders are woven as codes."""
    batch = _ordered(_batch(10, True), [i % 3 == 0 for i in range(10)])
    placed, kept = np.array([1, 4, 7]), np.array([0, 2, 3, 5, 6, 8, 9])
    fixed = batch.take(placed)
    new = Column(pa.array(["t1", "t4", "t7"], pa.string()))
    fixed = fixed.with_fields(timestamp=new)  # a rule changed one column
    got = interleaved(batch, kept, fixed, placed)
    for key in ("v", "c"):
        assert got.payload[key]._base is batch.payload[key].text
        assert got.payload[key]._text is None  # not gathered until read
    assert got.payload["c"].text.to_pylist() == batch.payload["c"].text.to_pylist()
    assert got.payload["v"].kind_array().tolist() == batch.payload["v"].kind_array().tolist()
    assert got.timestamp.text.to_pylist()[1::3] == ["t1", "t4", "t7"]
    assert got.order == batch.order


def test_columns_taken_together_compose_their_rows_once() -> None:
    """A take of a take composes each distinct row array once: the columns of a batch taken
    at once share theirs (a 27-column CSV composed the same rows 27 times at every take),
    and the rows read are those of one take after the other."""
    batch = _batch(12, False)
    first = batch.take(np.array([1, 2, 4, 7, 9, 11]))
    again = first.take(np.array([0, 2, 3, 5]))
    columns = [again.identifier, again.timestamp, again.event_name]
    columns += [*again.payload.values(), *again.extra.values(), again.code_column]
    assert len({id(column._at) for column in columns}) == 1
    assert again.identifier.text.to_pylist() == ["id1", "id4", "id7", "id11"]
    assert again.payload["c"].text.to_pylist() == ["c1", "c4", "c7", "c11"]
    assert again.error_code.to_pylist() == ["code1", "code1", "code1", "code2"]
    assert _rows(again) == _rows(batch.take(np.array([1, 4, 7, 11])))
    # interleaved takes the untouched columns from the batch's own, composed once too
    got = interleaved(first, np.array([1, 4]), again, np.array([0, 2, 3, 5]))
    assert len({id(column._at) for column in [got.identifier, *got.payload.values()]}) == 1
    assert got.identifier.text.to_pylist() == ["id1", "id2", "id4", "id7", "id9", "id11"]


@given(
    cells=st.lists(
        st.sampled_from(
            ["", "a", "b,c", 'q"'],
        ),
        min_size=1,
        max_size=30,
    ),
    picks=st.lists(st.booleans(), min_size=30, max_size=30),
    changed=st.booleans(),
)
def test_a_csv_columns_cells_are_its_values_with_absent_ones_empty(
    cells: list[str], picks: list[bool], changed: bool
) -> None:
    """A CSV column keeps the block's cells beside its values (empty cells absent): what a
    CSV writer writes for its rows (`Column.cells`) is the value or "" where absent, through
    takes and `interleaved`, read from those cells for rows no rule changed."""
    n = len(cells)
    block = pa.array(cells, pa.string())
    values = pa.array([c or None for c in cells], pa.string())
    batch = _batch(n, False)
    column = Column(values, filled=block)
    assert column.cells().to_pylist() == cells
    batch = batch.with_fields(payload=dict(batch.payload, v=column))
    placed = np.flatnonzero(np.asarray(picks[:n]))
    kept = np.flatnonzero(~np.asarray(picks[:n]))
    fixed = batch.take(placed)
    if changed and len(placed):
        new = Column(pa.array([None] * len(placed), pa.string()))
        fixed = fixed.with_fields(payload=dict(fixed.payload, v=new))
    got = interleaved(batch, kept, fixed, placed).payload["v"]
    want = [c if (i in kept or not changed) else "" for i, c in enumerate(cells)]
    assert got.cells().to_pylist() == want
    assert got.text.to_pylist() == [w or None for w in want]
    if not changed and len(placed):  # one gather from the batch's own, its cells too
        assert got._filled is not None


@given(
    n=st.integers(1, 40),
    picks=st.lists(st.booleans(), min_size=40, max_size=40),
    twice=st.booleans(),
    filled=st.booleans(),
)
def test_the_cell_sources_write_the_interleaved_columns_cells(
    n: int, picks: list[bool], twice: bool, filled: bool
) -> None:
    """A CSV writer reads each written row's cells where `Interleave.sources` says, nothing
    gathered first: the lines are those of the interleaved columns, whether a column was
    changed by a rule, taken from the batch's own (through a take of a take) or kept with
    the block's cells beside it."""
    batch = _batch(2 * n, False)
    if filled:  # a CSV column: the block's cells beside its values, "" where absent
        cells = [f"v,{i}" if i % 3 else "" for i in range(2 * n)]
        column = Column(pa.array([c or None for c in cells]), filled=pa.array(cells))
        batch = batch.with_fields(payload=dict(batch.payload, v=column))
    batch = batch.take(np.arange(2 * n - 1, 0, -2))  # a batch read at places of its blocks
    placed = np.flatnonzero(np.asarray(picks[:n]))
    kept = np.flatnonzero(~np.asarray(picks[:n]))
    fixed = batch.take(np.sort(np.concatenate([placed, kept[:1]])))
    fixed = fixed.take(np.flatnonzero(np.isin(fixed.rows, batch.rows[placed])))
    at = np.arange(0, len(placed), 2, dtype=np.int64)
    new = Column(pa.array([f'new"{i}' for i in range(len(at))], pa.string()))
    fixed = fixed.with_fields(timestamp=set_column(fixed.timestamp, at, new))
    if twice:
        fixed = fixed.with_fields(event_name=Column(pa.nulls(len(placed), pa.string())))
    got = interleaved(batch, kept, fixed, placed)
    weave = Interleave(n, kept, placed)
    pairs = [
        (batch.identifier, fixed.identifier),
        (batch.timestamp, fixed.timestamp),
        (batch.event_name, fixed.event_name),
        (batch.payload["v"], fixed.payload["v"]),
        (batch.payload["c"], fixed.payload["c"]),
    ]
    body, _ = csv_lines([weave.sources(mine, theirs) for mine, theirs in pairs], len(got), ";")
    written = [got.identifier, got.timestamp, got.event_name, got.payload["v"], got.payload["c"]]
    want, _ = csv_rows([column.text for column in written], ";")
    assert bytes(body) == bytes(want)
