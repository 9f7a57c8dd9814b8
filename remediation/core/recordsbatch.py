"""The rows the line reader read, as a batch (`records_batch`), in time linear in their values
however many keys of their own they name: apart from the reader (`jsonlread`) that hands it them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from remediation.core.batch import from_records
from remediation.core.columns import Batch, Column
from remediation.core.keyorders import KeyOrders
from remediation.core.valuekinds import present_text
from remediation.records import UsageRecord

# Distinct payload and extra keys of the rows read by the line reader past which their batch
# is made by `records_batch`'s grid, not by `from_records` (a pass over every row per key).
MANY_KEYS = 32


def records_batch(records: Sequence[UsageRecord]) -> Batch:
    """`from_records(records)`, in time linear in the rows' values whatever their keys: rows
    that each name keys of their own (past `MAX_SHAPES` shapes, all read by the line reader)
    cost `from_records` a pass over every row per key, 1,000 rows of 5 keys of their own
    ~5,000,000 look-ups. Past `MANY_KEYS` keys each key's values are gathered in one pass
    over the rows, and its column is a slice of one grid of every key's rows (`_keyed_grid`)."""
    payloads = [r.payload for r in records]
    extras = [r.extra for r in records]
    keys = set().union(*payloads, *extras) if records else set()
    if len(keys) <= MANY_KEYS:
        return from_records(records)
    cores = from_records(
        [
            UsageRecord(
                r.row_number,
                r.identifier,
                r.timestamp,
                r.event_name,
                {},
                {},
                r.error_code,
                r.error_message,
                r.malformed,
            )
            for r in records
        ]
    )
    return cores.with_fields(
        payload=_keyed_grid(payloads),
        extra=_keyed_grid(extras),
        order=KeyOrders.of((tuple(r.payload), tuple(r.extra)) for r in records),
    )


def _keyed_grid(mappings: Sequence[Mapping[str, object]]) -> dict[str, Column]:
    """Each key of the mappings (in first-seen order) as `from_records` makes its column:
    text (null where a row lacks the key), and kinds (`present_text`'s) unless every value is
    a string. The values are gathered in one pass, made one text array, and laid out as a
    grid of a key's rows after another's: each column is a slice of it."""
    n = len(mappings)
    places: dict[str, int] = {}
    keys, rows, texts, kinds = [], [], [], []
    for row, mapping in enumerate(mappings):
        for key, value in mapping.items():
            keys.append(places.setdefault(key, len(places)))
            rows.append(row)
            if type(value) is str:
                texts.append(value)
                kinds.append(-1)  # a string: no kind unless another value of its key has one
            else:
                text, kind = present_text(value)
                texts.append(text)
                kinds.append(kind)
    if not places:
        return {}
    at = np.asarray(keys, np.int64) * n + np.asarray(rows, np.int64)
    grid = np.full(len(places) * n, -1, np.int64)
    grid[at] = np.arange(len(at))
    text_grid = pa.array(texts, pa.string()).take(pa.array(grid, mask=grid < 0))
    kind_cells = np.full(len(places) * n, -1, np.int16)
    kind_cells[at] = kinds
    kind_grid = kind_cells.reshape(len(places), n)
    typed = np.asarray((kind_grid >= 0).any(axis=1), bool)  # a value that is no string
    found = {}
    for key, place in places.items():
        column_kinds = None
        if typed[place]:
            column_kinds = np.maximum(kind_grid[place], 0).astype(np.uint8)
            column_kinds = column_kinds if column_kinds.any() else None
        found[key] = Column(text_grid.slice(place * n, n), column_kinds)
    return found
