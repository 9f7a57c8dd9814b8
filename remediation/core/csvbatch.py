"""CSV cells (one text array per header column) as a `Batch`, by the header's `CsvLayout`.

An empty `payload_<key>` cell means the key is absent and an empty core cell means none was
given (the CSV convention of `csvlayouts`); other columns are kept verbatim; error columns become
the normalized `error_code`/`error_message`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.column import as_string
from remediation.core.columns import Batch, Column
from remediation.csvlayouts import CsvLayout
from remediation.records import resolve_error

PY_SPACE = " \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"  # what str.strip() strips of ASCII


def csv_batch(
    layout: CsvLayout,
    cells: Sequence[pa.Array],
    first_row: int,
    malformed: Mapping[int, str],
    rows: int,
    widths: Sequence[int] | None = None,
    event_name_fill: str = "",
) -> Batch:
    """`widths`: each cell column's widest cell in bytes, when none holds a control character
    (`csvwidths.plain_widths`; `Column.plain_within`). `event_name_fill`: the event name of
    every row of a header without an event_name column (`repair.InputPlan`)."""
    code, message = _errors(layout, cells, rows)
    broken: list[str | None] = [None] * rows
    for i, reason in malformed.items():
        broken[i] = reason
    return Batch(
        np.arange(first_row, first_row + rows, dtype=np.int64),
        _core(cells, layout.identifier, rows, widths),
        _core(cells, layout.timestamp, rows, widths),
        _core(cells, layout.event_name, rows, widths)
        if layout.event_name is not None or not event_name_fill
        else Column(pa.repeat(pa.scalar(event_name_fill, pa.string()), rows)),
        {key: _core(cells, i, rows, widths) for i, key in layout.payload},
        {name: _plain(Column(as_string(cells[i])), i, widths) for i, name in layout.extra},
        code,
        message,
        pa.array(broken, pa.string()),
    )


def _core(
    cells: Sequence[pa.Array], index: int | None, rows: int, widths: Sequence[int] | None
) -> Column:
    """A column where an empty cell is an absent field."""
    if index is None:
        return Column.absent(rows)
    text = as_string(cells[index])
    empty = pc.equal(text, "")
    if pc.any(empty).as_py():
        absent = pc.if_else(empty, pa.scalar(None, pa.string()), text)
        return _plain(Column(absent, filled=text), index, widths)
    return _plain(Column(text), index, widths)


def _plain(column: Column, index: int, widths: Sequence[int] | None) -> Column:
    """`column` (cell column `index`), knowing its widest cell when the block was measured."""
    column.plain_within = None if widths is None else widths[index]
    return column


def _errors(layout: CsvLayout, cells: Sequence[pa.Array], rows: int) -> tuple[pa.Array, pa.Array]:
    none = pa.nulls(rows, pa.string())
    if not layout.errors:
        return none, none
    simple = layout.simple_errors
    if simple is not None:
        # A file holds few distinct codes and messages: each is trimmed (and a code lowered)
        # once, then handed to its rows (2-3 % of a 1M-row run against doing it on every row).
        code = pc.dictionary_encode(as_string(cells[simple[0]]))
        message = None if simple[1] is None else pc.dictionary_encode(as_string(cells[simple[1]]))
        if _ascii(code.dictionary) and (message is None or _ascii(message.dictionary)):
            codes = _nulled(pc.utf8_lower(pc.utf8_trim(code.dictionary, PY_SPACE)))
            if message is None:
                return codes.take(code.indices), none
            messages = _nulled(pc.utf8_trim(message.dictionary, PY_SPACE))
            return codes.take(code.indices), messages.take(message.indices)
        raw_codes = cells[simple[0]].to_pylist()
        texts = cells[simple[1]].to_pylist() if simple[1] is not None else [""] * rows
        code_list = [c.strip().lower() or None for c in raw_codes]
        return pa.array(code_list, pa.string()), pa.array(
            [t.strip() or None for t in texts], pa.string()
        )
    columns = [(name, cells[i].to_pylist()) for i, name in layout.errors]
    pairs = [resolve_error({name: values[r] for name, values in columns}) for r in range(rows)]
    return pa.array([p[0] for p in pairs], pa.string()), pa.array(
        [p[1] for p in pairs], pa.string()
    )


def _ascii(text: pa.Array) -> bool:
    """Arrow trims and lowers ASCII exactly as Python does (not every other character)."""
    return bool(pc.all(pc.string_is_ascii(as_string(text))).as_py() is not False)


def _nulled(text: pa.Array) -> pa.Array:
    empty = pc.equal(text, "")
    if not pc.any(empty).as_py():
        return text
    return pc.if_else(empty, pa.scalar(None, pa.string()), text)
