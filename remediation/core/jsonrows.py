"""Rows as JSON objects, built on columns: the text `json.dumps(writers.record_object(record),
ensure_ascii=False, separators=(",", ":"))` gives for each row, byte for byte.

The identifier, timestamp and event name when present, the payload, then the other keys, each
object's keys in the row's own order (`Batch.order`; a CSV row's keys follow its columns).
Rows sharing a layout (which keys, in which order) are joined element-wise by Arrow, one
layout at a time, then put back in row order; a batch of many layouts (optional keys) is
joined in one pass over its keys, each row's pairs present or empty. A batch holding a value
whose JSON text is not its column text (an object or array, a float that is not finite) is
not `plain`: its rows are written record by record. What uses it: the JSON Lines writer
(corrected and quarantined lines) and the quarantined rows the service stores
(`audit.audit_records`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.columns import Batch, Column, KeyOrder, KeyOrders, Kind, key_orders
from remediation.core.text import join, json_parts, json_strings, json_text, take_parts
from remediation.records import MFX_PREFIX

NULL = "null"
_NOT_FINITE = ("inf", "-inf", "nan")  # repr of a float json.dumps spells otherwise
_CORE = ("identifier", "timestamp", "event_name")
_OBJECT_KEYS = frozenset((*_CORE, "payload"))  # `record_object` writes these first
# Layouts a batch may have before its rows are written all at once (`_all_at_once`), not a
# layout at a time: each layout costs a dozen Arrow calls (1M rows of 128 layouts, read by
# shape: 15-18 s written a layout at a time, 12.7 s at once).
FEW_LAYOUTS = 8


def row_texts(
    batch: Batch,
    identifiers: pa.Array,
    notes: Sequence[tuple[str, pa.Array]] = (),
    end: str = "",
) -> pa.Array:
    """Each row of a `plain` batch as its JSON object, written under `identifiers`, closed by
    `notes` (keys, and their values as JSON texts: a quarantined row's code and reason) and
    `end` (a large_string array, in row order)."""
    n = len(batch)
    cores = {
        "identifier": Column(identifiers),
        "timestamp": batch.timestamp,
        "event_name": batch.event_name,
    }
    present = {name: column.present() for name, column in cores.items()}
    orders = key_orders(batch)
    # A row's layout as one number: its key order's code, then a bit per core field.
    layout = orders.codes.astype(np.int64) << len(_CORE)
    for bit, name in enumerate(_CORE):
        layout |= present[name].astype(np.int64) << bit
    kinds, of_row = np.unique(layout, return_inverse=True)
    if len(kinds) > FEW_LAYOUTS:
        merged = _all_at_once(_Rows(batch, cores, present, orders, notes), end)
        if merged is not None:
            return merged
    encoded: dict[tuple[str, str], list[pa.Array | str]] = {}

    def values(group: str, key: str, column: Column, at: pa.Array) -> list[pa.Array | str]:
        found = encoded.get((group, key))
        if found is None:
            found = encoded[(group, key)] = value_parts(column)  # absent rows: "null"
        return take_parts(found, at)

    pieces, rows = [], []
    for at_kind, kind in enumerate(kinds.tolist()):
        has = tuple(bool(kind >> bit & 1) for bit in range(len(_CORE)))
        payload_keys, extra_keys = orders.distinct[kind >> len(_CORE)]
        members = np.flatnonzero(of_row.reshape(-1) == at_kind)
        at = pa.array(members)
        parts: list[pa.Array | str] = ["{"]
        for name, there in zip(_CORE, has, strict=True):
            if there:
                parts += [_key(name), *values("", name, cores[name], at), ","]
        parts.append('"payload":{')
        for key in payload_keys:
            parts += [_key(key), *values("p", key, batch.payload[key], at), ","]
        if payload_keys:
            parts.pop()
        parts.append("}")
        for key in extra_keys:
            if not key.startswith(MFX_PREFIX):
                parts += [",", _key(key), *values("e", key, batch.extra[key], at)]
        for key, texts in notes:
            parts += [",", _key(key), texts.take(at)]
        parts.append("}" + end)
        pieces.append(join(parts, len(members)))
        rows.append(members)
    if not pieces:
        return pa.array([], pa.large_string())
    every = pa.concat_arrays(pieces) if len(pieces) > 1 else pieces[0]
    if len(pieces) > 1:
        position = np.empty(n, np.int64)
        position[np.concatenate(rows)] = np.arange(n, dtype=np.int64)
        every = every.take(pa.array(position))
    return every


@dataclass(frozen=True)
class _Rows:
    """What `row_texts` writes rows from: the batch, its core columns (the identifiers as
    written), which rows have each, the rows' key orders and the closing notes."""

    batch: Batch
    cores: dict[str, Column]
    present: dict[str, np.ndarray[Any, Any]]
    orders: KeyOrders
    notes: Sequence[tuple[str, pa.Array]]

    def take(self, members: np.ndarray[Any, Any]) -> _Rows:
        taken = pa.array(members)
        return _Rows(
            self.batch.take(members),
            {name: column.take(members, taken) for name, column in self.cores.items()},
            {name: has[members] for name, has in self.present.items()},
            self.orders.take(members),
            [(key, texts.take(taken)) for key, texts in self.notes],
        )


def _all_at_once(rows: _Rows, end: str) -> pa.Array | None:
    """`row_texts` for many rows at once: the rows whose key orders one order of the keys
    follows (`_agreeing`) are written together (`_written`). None when that makes more than
    `FEW_LAYOUTS` groups."""
    groups = _agreeing(rows.orders.distinct)
    if groups is None:
        return None
    if len(groups) == 1:
        return _written(rows, end, groups[0][0])
    group_of = np.zeros(len(rows.orders.distinct), np.int64)
    for at, (_, held) in enumerate(groups):
        group_of[held] = at
    of_row = group_of[rows.orders.codes]
    pieces, places = [], []
    for at, (keys, _) in enumerate(groups):
        members = np.flatnonzero(of_row == at)
        pieces.append(_written(rows.take(members), end, keys))
        places.append(members)
    position = np.empty(len(of_row), np.int64)
    position[np.concatenate(places)] = np.arange(len(of_row), dtype=np.int64)
    return pa.concat_arrays(pieces).take(pa.array(position))


def _written(rows: _Rows, end: str, keys: tuple[list[str], list[str]]) -> pa.Array:
    """The rows, each key's `,"key":value` where a row has the key and nothing where not, in
    the order `keys` (payload keys, other keys), every object's first comma cut off."""
    batch, orders = rows.batch, rows.orders
    n = len(batch)

    def pair(key: str, column: Column, has: np.ndarray[Any, Any]) -> pa.Array:
        text = join(["," + _key(key), value_json(column)], n)
        return text if has.all() else pc.if_else(pa.array(has), text, _NO_TEXT)

    def holding(key: str, group: int) -> np.ndarray[Any, Any]:
        held = np.asarray([key in order[group] for order in orders.distinct], bool)
        return held[orders.codes]

    payload_keys, extra_keys = keys
    top = [pair(name, rows.cores[name], rows.present[name]) for name in _CORE]
    inner = [pair(key, batch.payload[key], holding(key, 0)) for key in payload_keys]
    top += [',"payload":{', *_after_comma(inner, n), "}"]
    top += [pair(key, batch.extra[key], holding(key, 1)) for key in extra_keys]
    top += [join(["," + _key(key), texts], n) for key, texts in rows.notes]
    return join(["{", *_after_comma(top, n), "}" + end], n)


# A key absent from a row: no text. (Arrow's join skipping nulls drops the rows whose every
# part is null, pyarrow 26: each pair carries its comma, and the first is cut off instead.)
_NO_TEXT = pa.scalar("", pa.large_string())


def _after_comma(parts: Sequence[pa.Array | str], n: int) -> list[pa.Array | str]:
    """The parts joined, each row's text without its first character (the comma before its
    first pair), as parts for `join`."""
    if not parts:
        return []
    return [pc.utf8_slice_codeunits(join(parts, n), 1)]


_Keys = tuple[list[str], list[str]]  # payload keys and other keys, in one order


def _agreeing(orders: Sequence[KeyOrder]) -> list[tuple[_Keys, list[int]]] | None:
    """The orders in groups whose orders one order of their keys follows (payload keys and
    the other keys apart; our own `mfx_` keys are not written): that order, and the group's
    orders (their places in `orders`). None past `FEW_LAYOUTS` groups."""
    groups: list[tuple[list[str], list[str], list[int]]] = []
    for at, (payload, extra) in enumerate(orders):
        written = [key for key in extra if not key.startswith(MFX_PREFIX)]
        for payload_keys, extra_keys, members in groups:
            merged = _merged(payload_keys, payload)
            merged_extra = None if merged is None else _merged(extra_keys, written)
            if merged is not None and merged_extra is not None:
                payload_keys[:], extra_keys[:] = merged, merged_extra
                members.append(at)
                break
        else:
            if len(groups) == FEW_LAYOUTS:
                return None
            groups.append((list(payload), written, [at]))
    return [((payload_keys, extra_keys), members) for payload_keys, extra_keys, members in groups]


def _merged(sequence: list[str], keys: Sequence[str]) -> list[str] | None:
    """`sequence` with the `keys` it lacks put in, so that `keys` follow it in their order;
    None when they cannot (two keys in the other order there)."""
    merged = list(sequence)
    last = -1  # where the key before this one is
    for key in keys:
        if key in merged:
            place = merged.index(key)
            if place <= last:
                return None
            last = place
        else:
            last += 1
            merged.insert(last, key)
    return merged


def quarantine_notes(codes: Any, reasons: Any) -> list[tuple[str, pa.Array]]:
    """The keys closing a quarantined row's object (`row_texts` notes), as the record writer
    adds them: its code and its reason, as JSON texts."""
    return [
        ("mfx_code", json_strings(pa.array(codes, pa.string()))),
        ("mfx_reason", json_strings(pa.array(reasons, pa.string()))),
    ]


def _key(key: str) -> str:
    """A key as JSON, with its colon."""
    return json_text(key) + ":"


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
    for column in columns:
        kinds = column.kinds
        if kinds is None:
            continue
        if (kinds == Kind.JSON).any():
            return False
        floats = np.flatnonzero(kinds == Kind.FLOAT)
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
