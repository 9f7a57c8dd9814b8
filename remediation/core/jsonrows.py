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
(`auditrecords.audit_records`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.batch import key_orders
from remediation.core.column import stacked_texts
from remediation.core.columns import Batch, Column, Kind
from remediation.core.jsontext import json_inner, json_parts, json_strings, json_text
from remediation.core.keyorders import KeyOrder, KeyOrders
from remediation.core.text import TextPool, join, take_parts, texts_of
from remediation.records import MFX_PREFIX

NULL = "null"
# What follows a pair's key: a string's opening quote, nothing (a bare value follows) or null
_THENS = ('"', "", NULL)
# Kinds as plain numbers, for the tests a column at a time (an enum member read costs a
# look-up through its class each time)
_TEXT_KIND, _FLOAT_KIND, _JSON_KIND = int(Kind.TEXT), int(Kind.FLOAT), int(Kind.JSON)
_NOT_FINITE = ("inf", "-inf", "nan")  # repr of a float json.dumps spells otherwise
_CORE = ("identifier", "timestamp", "event_name")
_OBJECT_KEYS = frozenset((*_CORE, "payload"))  # `record_object` writes these first
# Layouts a batch may have before its rows are written all at once (`_all_at_once`), not a
# layout at a time: each layout costs a dozen Arrow calls (1M rows of 128 layouts, read by
# shape: 15-18 s written a layout at a time, 12.7 s at once).
FEW_LAYOUTS = 8
# Groups of key orders (`_agreeing`) a batch written at once may make: past them, its rows are
# written a layout at a time. Apart from `FEW_LAYOUTS`, so that a test can write every batch
# at once (with both at 0, none ever was).
AT_ONCE_GROUPS = 8
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
    if len(kinds) > FEW_LAYOUTS or len(batch.payload) > MANY_KEYS:
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


def _all_at_once(rows: _Rows, end: str) -> pa.Array | None:
    """`row_texts` for many rows at once: the rows whose key orders one order of the keys
    follows (`_agreeing`) are written by that order (`_written`), every row's parts gathered
    in row order in one take (`_Pieces`). None when that makes more than `AT_ONCE_GROUPS`
    groups."""
    groups = _agreeing(rows.orders.distinct)
    if groups is None:
        return None
    pieces = _Pieces(len(rows.batch))
    group_of = np.zeros(len(rows.orders.distinct), np.int64)
    for at, (_, held) in enumerate(groups):
        group_of[held] = at
    of_row = group_of[rows.orders.codes]
    for at, (keys, _) in enumerate(groups):
        _written(pieces, rows, np.flatnonzero(of_row == at), end, keys)
    return pieces.rows()


def _written(
    pieces: _Pieces,
    rows: _Rows,
    members: np.ndarray[Any, Any],
    end: str,
    keys: tuple[list[str], list[str]],
) -> None:
    """The rows `members`, each key's `"key":value` where a row has the key and nothing where
    not, in the order `keys` (payload keys, other keys), a comma before every pair but an
    object's first, as parts of `pieces`. Joined element-wise instead (each pair, then each
    object's pairs with their first comma cut off, then the row; each order's rows taken out
    first and put back in row order after) every value's bytes were made five or six times
    (200,000 rows of the optional-keys file, 128 layouts: 0.52-0.70 s, gathered 0.27-0.34 s)."""
    batch, orders = rows.batch, rows.orders
    codes = orders.codes[members]
    # per group of keys (payload, other), each key's orders: a look-up a key, where testing
    # every order for every key cost keys x orders (rows each naming keys of their own)
    orders_of: tuple[dict[str, list[int]], dict[str, list[int]]] = ({}, {})
    for place, order in enumerate(orders.distinct):
        for group, keys_of in enumerate(orders_of):
            for key in order[group]:
                keys_of.setdefault(key, []).append(place)

    def holding(key: str, group: int) -> np.ndarray[Any, Any]:
        held = np.zeros(len(orders.distinct), bool)
        held[orders_of[group].get(key, [])] = True
        found: np.ndarray[Any, Any] = held[codes]
        return found

    def payload_holding() -> np.ndarray[Any, Any]:
        """Which rows have each payload key (a row of keys by a column of rows)."""
        held = np.zeros((len(payload_keys), len(orders.distinct)), bool)
        for at, key in enumerate(payload_keys):
            held[at, orders_of[0].get(key, [])] = True
        found: np.ndarray[Any, Any] = held[:, codes]
        return found

    payload_keys, extra_keys = keys
    every = np.ones(len(members), bool)
    # the object's keys: each with its value (None: the payload object) and the rows having it
    top: list[tuple[str, Column | pa.Array | None, np.ndarray[Any, Any]]] = [
        (name, rows.cores[name], rows.present[name][members]) for name in _CORE
    ]
    top.append(("payload", None, every))
    top += [(key, batch.extra[key], holding(key, 1)) for key in extra_keys]
    top += [(key, texts, every) for key, texts in rows.notes]
    pieces.start(members)
    pieces.constant("{")
    for (key, value, has), first in zip(top, _firsts([has for _, _, has in top]), strict=True):
        if value is not None:
            pieces.pair(key, value, has, first)
            continue
        pieces.prefix(key, has, first, "{")
        pieces.object_pairs(payload_keys, payload_holding(), batch.payload)
        pieces.constant("}")
    pieces.constant("}" + end)


def _firsts(present: Sequence[np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
    """For each of an object's keys, the rows where it is the first key present."""
    if not present:
        return []
    seen = np.cumsum(np.stack(present), axis=0)
    return [has & (count == 1) for has, count in zip(present, seen, strict=True)]


class _Pieces:
    """Rows made of parts side by side, written a group of rows at a time (`start`): per
    part, each row's text is a constant or its value in an array of the batch's rows.
    `rows` gathers every row's parts, in row order, from one pool of texts in one take
    (`TextPool`); a row of fewer parts than another is padded with "". Each array's texts
    (a column's JSON) are made once, whatever the groups."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._pool = TextPool()
        # by id(column): its texts, where absent, where not a string; its JSON string texts
        self._facts: dict[int, tuple[pa.Array, np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}
        self._inner: dict[int, pa.Array] = {}
        # per part, each row's place in the pool
        self._parts: list[np.ndarray[Any, Any]] = []
        self._members = np.zeros(0, np.int64)
        self._part = 0
        self._stacked: _Stacked | None = None

    def start(self, members: np.ndarray[Any, Any]) -> None:
        """The next parts are those of the rows `members`."""
        self._members, self._part = members, 0

    def _put(self, places: np.ndarray[Any, Any]) -> None:
        if self._part == len(self._parts):
            self._parts.append(np.full(self._n, TextPool.EMPTY, np.int64))
        self._parts[self._part][self._members] = places
        self._part += 1

    def constant(self, text: str) -> None:
        self._put(np.full(len(self._members), self._pool.constant(text), np.int64))

    def prefix(
        self, key: str, has: np.ndarray[Any, Any], first: np.ndarray[Any, Any], then: str = ""
    ) -> None:
        """`"key":` (after a comma unless `first`) where a row has the key, then `then`."""
        named = _key(key) + then
        places = np.where(first, self._pool.constant(named), self._pool.constant("," + named))
        self._put(np.where(has, places, TextPool.EMPTY))

    def pair(
        self,
        key: str,
        value: Column | pa.Array,
        has: np.ndarray[Any, Any],
        first: np.ndarray[Any, Any],
    ) -> None:
        """`"key":` (after a comma unless `first`) and the value's JSON text, where a row has
        the key: a JSON text array's as it is; a column's as `value_json` writes it, a
        string's quotes as constants around its text, null where the value is absent."""
        if isinstance(value, pa.Array):
            self.prefix(key, has, first)
            self._values(value, has)
            return
        named = _key(key)
        text, missing, literal = self._texts_of(value)
        missing, literal = missing[self._members], literal[self._members]
        quoted = has & ~missing & ~literal
        bare = has & ~missing & literal
        # each row's head: `"key":` after a comma or not, then a string's opening quote,
        # nothing (a bare value follows) or null
        heads = np.asarray(
            [
                self._pool.constant(comma + named + then)
                for comma in (",", "")
                for then in ('"', "", NULL)
            ],
            np.int64,
        )
        kind = np.where(quoted, 0, np.where(bare, 1, 2))
        places = np.where(has, heads[first.astype(np.int64) * 3 + kind], TextPool.EMPTY)
        self._put(places)
        if bare.any():
            self._values(text, bare)
        if quoted.any():
            self._values(self._inner_of(value), quoted)
            self._put(np.where(quoted, self._pool.constant('"'), TextPool.EMPTY))

    def object_pairs(
        self, keys: Sequence[str], has: np.ndarray[Any, Any], columns: Mapping[str, Column]
    ) -> None:
        """An object's pairs: `"key":value` for each of `keys` (of `columns`) a row has, in
        that order, a comma between two (`has`: which rows have each key, a row of keys by a
        column of rows). A row's j-th pair is its parts 3j to 3j + 2 (its head, its value and
        its closing quote, as `pair` writes them), so that keys no row shares (rows naming
        keys of their own) take no parts of their own: a row has as many parts as its most
        keys, not three a key of its batch."""
        counts = has.sum(axis=0)
        width = int(counts.max()) if has.size else 0
        if not width:
            return
        stacked = self._stacked_of(columns)
        rows, of_key = np.nonzero(has.T)  # a row's pairs in the order of `keys`
        nth = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
        slot = np.asarray([stacked.slot[key] for key in keys], np.int64)[of_key]
        at = slot * self._n + self._members[rows]  # each pair's value in the stacked texts
        kind = np.where(stacked.missing[at], 2, np.where(stacked.literal[at], 1, 0))
        # each pair's head: its key after a comma or not (an object's first pair), then a
        # string's opening quote, nothing (a bare value follows) or null; made once each
        first = (nth == 0).astype(np.int64)
        heads, head_of = np.unique((of_key * 2 + first) * 3 + kind, return_inverse=True)
        texts = [
            ("," * (1 - head // 3 % 2)) + _key(keys[head // 6]) + _THENS[head % 3]
            for head in heads.tolist()
        ]
        head = np.asarray([self._pool.constant(text) for text in texts], np.int64)[head_of]
        value = np.full(len(rows), TextPool.EMPTY, np.int64)
        bare, quoted = kind == 1, kind == 0
        if bare.any():
            value[bare] = self._pool.start(stacked.text) + at[bare]
        if quoted.any():
            value[quoted] = self._pool.start(stacked.inner()) + at[quoted]
        parts = np.full((len(self._members), 3 * width), TextPool.EMPTY, np.int64)
        parts[rows, 3 * nth] = head.reshape(-1)
        parts[rows, 3 * nth + 1] = value
        parts[rows, 3 * nth + 2] = np.where(quoted, self._pool.constant('"'), TextPool.EMPTY)
        for part in parts.T:
            self._put(part)

    def _stacked_of(self, columns: Mapping[str, Column]) -> _Stacked:
        if self._stacked is None or self._stacked.columns is not columns:
            self._stacked = _Stacked(columns)
        return self._stacked

    def _texts_of(
        self, column: Column
    ) -> tuple[pa.Array, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """A column's texts, where they are absent, and where a value is not a string (its
        JSON text is its text: numbers, true, false, null)."""
        found = self._facts.get(id(column))
        if found is None:
            text = column.text
            missing = np.asarray(text.is_null().to_numpy(zero_copy_only=False), bool)
            literal = (
                np.zeros(len(text), bool) if column.kinds is None else column.kinds != Kind.TEXT
            )
            found = self._facts[id(column)] = (text, missing, literal)
        return found

    def _inner_of(self, column: Column) -> pa.Array:
        """A column's texts as JSON strings without their quotes ("" where absent)."""
        found = self._inner.get(id(column))
        if found is None:
            text = column.text
            inner = json_inner(pc.fill_null(text, "") if text.null_count else text)
            assert inner is not None
            found = self._inner[id(column)] = inner
        return found

    def _values(self, array: pa.Array, use: np.ndarray[Any, Any]) -> None:
        """Each row's value in `array` (of the batch's rows) where `use`, else ""."""
        self._put(np.where(use, self._pool.start(array) + self._members, TextPool.EMPTY))

    def rows(self) -> pa.Array:
        return texts_of(self._pool.take(np.stack(self._parts, axis=1)), len(self._parts))


class _Stacked:
    """An object's columns (a batch's payload) side by side in one array of texts, column i's
    rows after those of the columns before it (`slot`: each key's place), with where a value
    is absent and where it is not a string: made once for every group of rows written."""

    def __init__(self, columns: Mapping[str, Column]) -> None:
        self.columns = columns
        self.slot = {key: at for at, key in enumerate(columns)}
        self.text = stacked_texts(list(columns.values()))
        self.missing = np.asarray(self.text.is_null().to_numpy(zero_copy_only=False), bool)
        kinds = [column.kind_array() for column in columns.values()]
        self.literal = np.concatenate(kinds) != _TEXT_KIND if kinds else np.zeros(0, bool)
        self._inner: pa.Array | None = None

    def inner(self) -> pa.Array:
        """The texts as JSON strings without their quotes ("" where absent)."""
        if self._inner is None:
            text = self.text
            inner = json_inner(pc.fill_null(text, "") if text.null_count else text)
            assert inner is not None
            self._inner = inner
        return self._inner


_Keys = tuple[list[str], list[str]]  # payload keys and other keys, in one order


def _agreeing(orders: Sequence[KeyOrder]) -> list[tuple[_Keys, list[int]]] | None:
    """The orders in groups whose orders one order of their keys follows (payload keys and
    the other keys apart; our own `mfx_` keys are not written): that order, and the group's
    orders (their places in `orders`). None past `AT_ONCE_GROUPS` groups."""
    # each group: its payload keys and other keys in order, the keys of both, its orders
    groups: list[tuple[list[str], list[str], tuple[set[str], set[str]], list[int]]] = []
    for at, (payload, extra) in enumerate(orders):
        written = [key for key in extra if not key.startswith(MFX_PREFIX)]
        for payload_keys, extra_keys, (in_payload, in_extra), members in groups:
            merged = _merged(payload_keys, payload, in_payload)
            merged_extra = None if merged is None else _merged(extra_keys, written, in_extra)
            if merged is not None and merged_extra is not None:
                payload_keys[:], extra_keys[:] = merged, merged_extra
                in_payload.update(payload)
                in_extra.update(written)
                members.append(at)
                break
        else:
            if len(groups) == AT_ONCE_GROUPS:
                return None
            groups.append((list(payload), written, (set(payload), set(written)), [at]))
    return [
        ((payload_keys, extra_keys), members) for payload_keys, extra_keys, _, members in groups
    ]


def _merged(sequence: list[str], keys: Sequence[str], known: set[str]) -> list[str] | None:
    """`sequence` (its keys: `known`) with the `keys` it lacks put in, so that `keys` follow it
    in their order; None when they cannot (two keys in the other order there)."""
    merged = list(sequence)
    last = -1  # where the key before this one is
    for key in keys:
        if key in known:
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
