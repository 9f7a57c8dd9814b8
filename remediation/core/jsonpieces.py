"""The parts writer of rows written all at once (`jsonrowsatonce`): each row's `"key":value`
pairs as places in one pool of texts, gathered in row order in one take. Apart from the
grouping of key orders, which decides what these write, not how.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.column import stacked_texts
from remediation.core.columns import Column, Kind
from remediation.core.jsontext import json_inner, json_text
from remediation.core.keyorders import FoldedKey
from remediation.core.text import TextPool, texts_of

NULL = "null"
# What follows a pair's key: a string's opening quote, nothing (a bare value follows) or null
_THENS = ('"', "", NULL)
# Kinds as plain numbers, for the tests a column at a time (an enum member read costs a
# look-up through its class each time)
_TEXT_KIND = int(Kind.TEXT)


def json_key(key: str) -> str:
    """A key as JSON, with its colon (nothing for a folded key: its value holds its pairs)."""
    if type(key) is FoldedKey:
        return ""
    return json_text(key) + ":"


class Pieces:
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

    def constant(self, text: str, has: np.ndarray[Any, Any] | None = None) -> None:
        """`text` in every row of the group, or in the rows `has` only."""
        place = self._pool.constant(text)
        if has is None:
            self._put(np.full(len(self._members), place, np.int64))
        else:
            self._put(np.where(has, place, TextPool.EMPTY))

    def prefix(
        self, key: str, has: np.ndarray[Any, Any], first: np.ndarray[Any, Any], then: str = ""
    ) -> None:
        """`"key":` (after a comma unless `first`) where a row has the key, then `then`."""
        named = json_key(key) + then
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
        the key: a JSON text array's as it is; a column's as `jsonrows.value_json` writes it, a
        string's quotes as constants around its text, null where the value is absent."""
        if isinstance(value, pa.Array):
            self.prefix(key, has, first)
            self._values(value, has)
            return
        named = json_key(key)
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
            ("," * (1 - head // 3 % 2)) + json_key(keys[head // 6]) + _THENS[head % 3]
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
