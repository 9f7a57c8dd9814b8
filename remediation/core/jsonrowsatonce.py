"""Rows of many layouts written all at once (`jsonrows.row_texts` past `jsonrows.FEW_LAYOUTS`
layouts or `jsonrows.MANY_KEYS` keys): key orders grouped under one order of their keys each,
every group's pairs present or empty, gathered by `jsonpieces.Pieces`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from remediation.core.columns import Batch, Column
from remediation.core.jsonpieces import Pieces
from remediation.core.keyorders import KeyOrder, KeyOrders, names_payload
from remediation.records import MFX_PREFIX

# The keys `record_object` writes before the payload, each when present
CORE = ("identifier", "timestamp", "event_name")
# Groups of key orders (`_agreeing`) a batch written at once may make: past them, its rows are
# written a layout at a time. Apart from `jsonrows.FEW_LAYOUTS`, so that a test can write every
# batch at once (with both at 0, none ever was).
AT_ONCE_GROUPS = 8


@dataclass(frozen=True)
class Rows:
    """What `row_texts` writes rows from: the batch, its core columns (the identifiers as
    written), which rows have each, the rows' key orders and the closing notes."""

    batch: Batch
    cores: dict[str, Column]
    present: dict[str, np.ndarray[Any, Any]]
    orders: KeyOrders
    notes: Sequence[tuple[str, pa.Array]]


def all_at_once(rows: Rows, end: str) -> pa.Array | None:
    """`row_texts` for many rows at once: the rows whose key orders one order of the keys
    follows (`_agreeing`) are written by that order (`_written`), every row's parts gathered
    in row order in one take (`Pieces`). None when that makes more than `AT_ONCE_GROUPS`
    groups."""
    groups = _agreeing(rows.orders.distinct)
    if groups is None:
        return None
    pieces = Pieces(len(rows.batch))
    group_of = np.zeros(len(rows.orders.distinct), np.int64)
    for at, (_, held) in enumerate(groups):
        group_of[held] = at
    of_row = group_of[rows.orders.codes]
    for at, (keys, _) in enumerate(groups):
        _written(pieces, rows, np.flatnonzero(of_row == at), end, keys)
    return pieces.rows()


def _written(
    pieces: Pieces,
    rows: Rows,
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
    holding = _KeyHolding(rows.orders, rows.orders.codes[members])
    payload_keys, extra_keys = keys
    every = np.ones(len(members), bool)
    # the object's keys: each with its value (None: the payload object) and the rows having it
    top: list[tuple[str, Column | pa.Array | None, np.ndarray[Any, Any]]] = [
        (name, rows.cores[name], rows.present[name][members]) for name in CORE
    ]
    top.append(("payload", None, _payload_named(rows, members) if rows.notes else every))
    top += [(key, rows.batch.extra[key], holding.of(key, 1)) for key in extra_keys]
    top += [(key, texts, every) for key, texts in rows.notes]
    pieces.start(members)
    pieces.constant("{")
    for (key, value, has), first in zip(top, _firsts([has for _, _, has in top]), strict=True):
        if value is not None:
            pieces.pair(key, value, has, first)
            continue
        pieces.prefix(key, has, first, "{")
        pieces.object_pairs(payload_keys, holding.payload(payload_keys), rows.batch.payload)
        pieces.constant("}", has)
    pieces.constant("}" + end)


def _payload_named(rows: Rows, members: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Which of the rows `members` name a payload: a quarantined row (one with notes) that
    named none is written without one, as `record_object` writes it."""
    named = np.fromiter(map(names_payload, rows.orders.distinct), bool)
    found: np.ndarray[Any, Any] = named[rows.orders.codes[members]]
    return found


class _KeyHolding:
    """Which of the rows (by their orders' `codes`) hold a key: per group of keys (payload,
    other), each key's orders, a look-up a key, where testing every order for every key cost
    keys x orders (rows each naming keys of their own)."""

    def __init__(self, orders: KeyOrders, codes: np.ndarray[Any, Any]) -> None:
        self.orders, self.codes = orders, codes
        self.orders_of: tuple[dict[str, list[int]], dict[str, list[int]]] = ({}, {})
        for place, order in enumerate(orders.distinct):
            for group, keys_of in enumerate(self.orders_of):
                for key in order[group]:
                    keys_of.setdefault(key, []).append(place)

    def of(self, key: str, group: int) -> np.ndarray[Any, Any]:
        held = np.zeros(len(self.orders.distinct), bool)
        held[self.orders_of[group].get(key, [])] = True
        found: np.ndarray[Any, Any] = held[self.codes]
        return found

    def payload(self, payload_keys: list[str]) -> np.ndarray[Any, Any]:
        """Which rows have each payload key (a row of keys by a column of rows)."""
        held = np.zeros((len(payload_keys), len(self.orders.distinct)), bool)
        for at, key in enumerate(payload_keys):
            held[at, self.orders_of[0].get(key, [])] = True
        found: np.ndarray[Any, Any] = held[:, self.codes]
        return found


def _firsts(present: Sequence[np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
    """For each of an object's keys, the rows where it is the first key present."""
    if not present:
        return []
    seen = np.cumsum(np.stack(present), axis=0)
    return [has & (count == 1) for has, count in zip(present, seen, strict=True)]


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
