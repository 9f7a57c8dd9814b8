"""Rows as JSON objects, built on columns: the text `json.dumps(writers.record_object(record),
ensure_ascii=False, separators=(",", ":"))` gives for each row, byte for byte.

The identifier, timestamp and event name when present, the payload (none for a quarantined
row that named none), then the other keys, each object's keys in the row's own order
(`Batch.order`; a CSV row's keys follow its columns).
Rows sharing a layout (which keys, in which order) are joined element-wise by Arrow, one
layout at a time, then put back in row order; a batch of many layouts (optional keys) is
joined in one pass over its keys, each row's pairs present or empty. A batch holding a value
whose JSON text is not its column text (an object or array, a float that is not finite) is
not `plain`: its rows are written record by record. What uses it: the JSON Lines writer
(corrected and quarantined lines) and the quarantined rows the service stores
(`auditrecords.audit_records`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.batch import key_orders
from remediation.core.column import Mask
from remediation.core.columns import Batch, Column, Kind
from remediation.core.jsonpieces import NULL, json_key
from remediation.core.jsonrowsatonce import CORE, Rows, all_at_once
from remediation.core.jsontext import json_parts, json_strings
from remediation.core.keyorders import KeyOrders, names_payload
from remediation.core.text import join, take_parts
from remediation.records import MFX_PREFIX

# Kinds as plain numbers, for the tests a column at a time (an enum member read costs a
# look-up through its class each time)
_FLOAT_KIND, _JSON_KIND = int(Kind.FLOAT), int(Kind.JSON)
_NOT_FINITE = ("inf", "-inf", "nan")  # repr of a float json.dumps spells otherwise
_OBJECT_KEYS = frozenset((*CORE, "payload"))  # `record_object` writes these first
# Layouts a batch may have before its rows are written all at once (`all_at_once`), not a
# layout at a time: each layout costs a dozen Arrow calls (1M rows of 128 layouts, read by
# shape: 15-18 s written a layout at a time, 12.7 s at once).
FEW_LAYOUTS = 8
# Payload keys a batch may have before its rows are written all at once, however few its
# layouts: a layout at a time, each key of each layout costs a few Arrow calls (rows naming
# keys of their own, 20,000 rows of 5 each: their quarantined rows' lines 3.6 s of 26 s).
MANY_KEYS = 32


def row_texts(
    batch: Batch,
    identifiers: pa.Array,
    notes: Sequence[tuple[str, pa.Array]] = (),
    end: str = "",
) -> pa.Array:
    """Each row of a `plain` batch as its JSON object, written under `identifiers`, closed by
    `notes` (keys, and their values as JSON texts: a quarantined row's code and reason, which
    is written as it came: without a payload when it named none) and `end` (a large_string
    array, in row order)."""
    cores = {
        "identifier": Column(identifiers),
        "timestamp": batch.timestamp,
        "event_name": batch.event_name,
    }
    present = {name: column.present() for name, column in cores.items()}
    orders = key_orders(batch)
    kinds, of_row = _layouts(orders, present)
    if len(kinds) > FEW_LAYOUTS or len(batch.payload) > MANY_KEYS:
        merged = all_at_once(Rows(batch, cores, present, orders, notes), end)
        if merged is not None:
            return merged
    values = _EncodedValues()
    pieces, rows = [], []
    for at_kind, kind in enumerate(kinds.tolist()):
        members = np.flatnonzero(of_row.reshape(-1) == at_kind)
        at = pa.array(members)
        pairs = _layout_pairs(batch, cores, orders, kind, values, at, bool(notes))
        pairs += [[json_key(key), texts.take(at)] for key, texts in notes]
        pieces.append(join([*_object(pairs), end], len(members)))
        rows.append(members)
    return _in_row_order(pieces, rows, len(batch))


def _layouts(
    orders: KeyOrders, present: dict[str, Mask]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.intp]]:
    """The batch's distinct layouts and each row's among them; a row's layout as one number:
    its key order's code, then a bit per core field."""
    layout = orders.codes.astype(np.int64) << len(CORE)
    for bit, name in enumerate(CORE):
        layout |= present[name].astype(np.int64) << bit
    kinds, of_row = np.unique(layout, return_inverse=True)
    return kinds, of_row


class _EncodedValues:
    """Each column's values as JSON parts, encoded once a batch (absent rows: "null"), taken
    for the rows of one layout."""

    def __init__(self) -> None:
        self.encoded: dict[tuple[str, str], list[pa.Array | str]] = {}

    def __call__(self, group: str, key: str, column: Column, at: pa.Array) -> list[pa.Array | str]:
        found = self.encoded.get((group, key))
        if found is None:
            found = self.encoded[(group, key)] = value_parts(column)
        return take_parts(found, at)


def _layout_pairs(
    batch: Batch,
    cores: dict[str, Column],
    orders: KeyOrders,
    kind: int,
    values: _EncodedValues,
    at: pa.Array,
    as_came: bool,
) -> list[list[pa.Array | str]]:
    """The pairs of the rows `at` of one layout (`kind`, as `_layouts` numbers it), each as its
    parts: the core fields present, the payload object, then the other keys. `as_came` (a
    quarantined row): a row that named no payload is written without one, as `record_object`
    writes it."""
    has = tuple(bool(kind >> bit & 1) for bit in range(len(CORE)))
    order = orders.distinct[kind >> len(CORE)]
    payload_keys, extra_keys = order
    pairs = [
        [json_key(name), *values("", name, cores[name], at)]
        for name, there in zip(CORE, has, strict=True)
        if there
    ]
    if not as_came or names_payload(order):
        inner = [[json_key(key), *values("p", key, batch.payload[key], at)] for key in payload_keys]
        pairs.append(['"payload":', *_object(inner)])
    pairs += [
        [json_key(key), *values("e", key, batch.extra[key], at)]
        for key in extra_keys
        if not key.startswith(MFX_PREFIX)
    ]
    return pairs


def _object(pairs: list[list[pa.Array | str]]) -> list[pa.Array | str]:
    """The parts of an object of `pairs` (each pair's parts): braced, a comma between two."""
    parts: list[pa.Array | str] = ["{"]
    for at, pair in enumerate(pairs):
        parts += [",", *pair] if at else pair
    parts.append("}")
    return parts


def _in_row_order(pieces: list[pa.Array], rows: list[npt.NDArray[np.intp]], n: int) -> pa.Array:
    """The layouts' texts (`pieces`, of the rows `rows` each) as one array in row order."""
    if not pieces:
        return pa.array([], pa.large_string())
    every = pa.concat_arrays(pieces) if len(pieces) > 1 else pieces[0]
    if len(pieces) > 1:
        position = np.empty(n, np.int64)
        position[np.concatenate(rows)] = np.arange(n, dtype=np.int64)
        every = every.take(pa.array(position))
    return every


def quarantine_notes(codes: Any, reasons: Any) -> list[tuple[str, pa.Array]]:
    """The keys closing a quarantined row's object (`row_texts` notes), as the record writer
    adds them: its code and its reason, as JSON texts."""
    return [
        ("mfx_code", json_strings(pa.array(codes, pa.string()))),
        ("mfx_reason", json_strings(pa.array(reasons, pa.string()))),
    ]


def plain(batch: Batch) -> bool:
    """Every value's JSON text is its column text or its quoted string (no object or array,
    no float json.dumps spells its own way), and no other key takes the name of one
    `record_object` writes first (a CSV column named `payload`): `row_texts` writes it."""
    if any(key in _OBJECT_KEYS for key in batch.extra):
        return False
    columns: Sequence[Column] = [
        batch.timestamp,
        batch.event_name,
        *batch.payload.values(),
        *batch.extra.values(),
    ]
    typed = [column for column in columns if column.kinds is not None]
    if not typed:
        return True
    # every column's kinds tested at once (a batch of rows naming keys of their own has
    # hundreds of columns), then the columns holding floats one by one
    kinds = np.concatenate([column.kind_array() for column in typed])
    if (kinds == _JSON_KIND).any():
        return False
    if not (kinds == _FLOAT_KIND).any():
        return True
    for column in typed:
        floats = np.flatnonzero(column.kind_array() == _FLOAT_KIND)
        if len(floats) and any(
            t in _NOT_FINITE for t in column.text.take(pa.array(floats)).to_pylist()
        ):
            return False
    return True


def value_parts(column: Column) -> list[pa.Array | str]:
    """`value_json(column)` as parts for `join` (text alone quoted by the constants around
    it, when every value is text and present)."""
    if column.kinds is None:
        return json_parts(column.text)
    return [value_json(column)]


def value_json(column: Column) -> pa.Array:
    """Each value as json.dumps writes it (text quoted, numbers as they are)."""
    if column.kinds is None:
        return json_strings(column.text)
    literal = column.kinds != Kind.TEXT
    raw = pc.fill_null(column.text, NULL)
    if literal.all():
        return raw
    quoted = json_strings(column.text)
    if not literal.any():
        return quoted
    n = len(column)
    index = np.where(literal, n + np.arange(n), np.arange(n))
    both = pa.concat_arrays([quoted.cast(pa.large_string()), raw.cast(pa.large_string())])
    return both.take(pa.array(index))
