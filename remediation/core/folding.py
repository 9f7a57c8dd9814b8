"""Payload keys few rows of a batch name (rows naming keys of their own) folded into a few
values of their rows' pairs as JSON text, before the batch is decided (`fold`).

Every distinct key of a batch is a column, worked on by every check, rule, take and writer:
rows each naming keys of their own made hundreds of columns a batch, each costing a few dozen
Arrow calls (20,000 rows of 5 such keys: 60x the `json` copy). No rule or check reads such a
key by column (those read the meters' and the rules' keys: `_known`), and none of their values
is one a check suspects (`_Cells.fine`): each row's run of them is held as one value, the
text the writers write for those pairs (`"k":1,"l":"x"`), under a `FoldedKey` in the row's key
order. The writers write a folded key's value as it is, with no key of its own
(`jsonpieces.json_key`); a row handled one by one has its pairs back in their places
(`Batch.records`); a meter's dimension check counts a folded key as the unused keys it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.changes import Context
from remediation.core.checks import PLAIN_FLOAT
from remediation.core.column import Column, stacked_texts
from remediation.core.columns import Batch, Kind
from remediation.core.jsonpieces import json_key
from remediation.core.jsontext import json_strings
from remediation.core.keyorders import FoldedKey, KeyOrder, KeyOrders
from remediation.core.textmeasures import byte_lengths, has_control, mask
from remediation.limits import FieldLimits

# A batch of more payload keys than this has the rare ones folded (fewer cost less than the
# folding)...
FOLD_PAST = 32
# ... those of at most this share of its rows.
FOLDED_SHARE = 0.25


def folded_keys(count: int) -> list[FoldedKey]:
    return [FoldedKey(f"\x00folded {at}") for at in range(count)]


def fold(batch: Batch, ctx: Context) -> Batch:
    """`batch` with its rare payload keys folded (rows naming keys of their own), or as it is."""
    if batch.order is None or len(batch.payload) <= FOLD_PAST:
        return batch
    rare = _rare(batch.order, len(batch))
    if len(rare) <= FOLD_PAST // 2:  # a wide batch: its keys in most rows
        return batch
    keys, cells, picked = _foldable(batch, [key for key in batch.payload if key in rare], ctx)
    if cells is None or len(picked) <= FOLD_PAST // 2:
        return batch
    return _folded(batch, keys, cells, picked)


def fold_like(new: Batch, batch: Batch, ctx: Context) -> Batch:
    """Rows a rule handled one by one (`new`, built from their records, every key a column)
    folded as the batch they go back into (`rules.base.put`): a key `batch` holds as a column
    stays one; when `batch` holds folded keys, every other key `fold` could fold is folded,
    whatever its share of `new` (its rows were folded in the batch they came from). Without
    it each of their keys came back as a column of the whole batch."""
    if new.order is None or not any(type(key) is FoldedKey for key in batch.payload):
        return new
    others = [key for key in new.payload if key not in batch.payload and type(key) is str]
    keys, cells, picked = _foldable(new, others, ctx)
    return _folded(new, keys, cells, picked) if cells is not None and picked else new


def _foldable(
    batch: Batch, candidates: Sequence[str], ctx: Context
) -> tuple[list[str], _Cells | None, list[int]]:
    """Of the `candidates`, the keys no rule reads and of a plain name, their cells, and the
    places among them of those whose values no check suspects."""
    known = _known(ctx)
    limits = ctx.index.limits
    keys = [key for key in candidates if key.lower() not in known and _plain_key(key, limits)]
    if not keys:
        return keys, None, []
    cells = _Cells.of([batch.payload[key] for key in keys])
    return keys, cells, np.flatnonzero(cells.fine(limits)).tolist()


def _rare(order: KeyOrders, n: int) -> set[str]:
    """The payload keys at most `FOLDED_SHARE` of the rows name (counted by key order)."""
    counts: dict[str, int] = {}
    for (payload_keys, _), rows in zip(
        order.distinct,
        np.bincount(order.codes, minlength=len(order.distinct)).tolist(),
        strict=True,
    ):
        for key in payload_keys:
            counts[key] = counts.get(key, 0) + rows
    most = FOLDED_SHARE * n
    return {key for key, count in counts.items() if count <= most and type(key) is str}


def _plain_key(key: str, limits: FieldLimits) -> bool:
    return len(key) <= limits.max_payload_key_chars and key.isprintable()


def _known(ctx: Context) -> frozenset[str]:
    """Every key a rule or check may read by column, lower-cased: the meters' customer,
    value and dimension keys, the rules' aliases and column names."""
    rules = ctx.rules
    names: list[str] = [*rules.customer_keys, *rules.value_keys]
    for key, aliases in rules.dimension_aliases.items():
        names += [key, *aliases]
    for name, field in rules.columns.items():
        names += [name, field, field.removeprefix("payload.").removeprefix("payload_")]
    for meter in ctx.index.meters:
        names += [meter.customer_key, meter.value_key, *meter.dimension_keys]
    names += list(ctx.header_aliases)
    names += list(ctx.header_aliases.values())
    return frozenset(name.lower() for name in names)


@dataclass(frozen=True)
class _Cells:
    """The candidate columns' texts one after the other (`stacked_texts`), each cell's kind
    and where one is present (a row of cells a column)."""

    texts: pa.Array
    kinds: np.ndarray[Any, Any]
    present: np.ndarray[Any, Any]

    @classmethod
    def of(cls, columns: Sequence[Column]) -> _Cells:
        texts = stacked_texts(columns)
        kinds = np.concatenate([column.kind_array() for column in columns])
        present = mask(pc.is_valid(texts)).reshape(len(columns), -1)
        return cls(texts, kinds, present)

    def fine(self, limits: FieldLimits) -> np.ndarray[Any, Any]:
        """Which columns hold only values no check suspects (`textmeasures.field_suspects`,
        `checks.problem_ids`): texts and numbers within the field limits, no control
        character in a text, a float only as its plain number; true, false, null."""
        kinds, whole = self.kinds, Column(self.texts)
        fine = (kinds == Kind.BOOL) | (kinds == Kind.NULL)
        short = byte_lengths(whole) <= limits.max_payload_value_chars
        fine |= short & ((kinds == Kind.INT) | (kinds == Kind.TEXT) & ~has_control(whole))
        floats = np.flatnonzero(short & (kinds == Kind.FLOAT))
        if len(floats):
            picked = self.texts.take(pa.array(floats))
            fine[floats] = mask(pc.match_substring_regex(picked, PLAIN_FLOAT))
        ok: np.ndarray[Any, Any] = (~self.present | fine.reshape(self.present.shape)).all(axis=1)
        return ok


def _folded(batch: Batch, keys: Sequence[str], cells: _Cells, picked: Sequence[int]) -> Batch:
    """`batch` with the `keys` of `cells` at `picked` folded: each row's runs of them one
    value each, the text of their pairs as the writers write them."""
    assert batch.order is not None
    folded = [keys[at] for at in picked]
    runs = _Runs.of(batch.order, folded)
    names = folded_keys(runs.most)
    if any(name in batch.payload for name in names):
        return batch
    n = len(batch)
    first, joined = _runs_text(batch.order, runs, folded, cells, picked, n)
    gone = set(folded)
    payload = {key: column for key, column in batch.payload.items() if key not in gone}
    for run, name in enumerate(names):
        mine = first // n == run
        index = np.full(n, -1, np.int64)
        index[first[mine] % n] = np.flatnonzero(mine)
        held = index >= 0
        text = joined.take(pa.array(index, mask=~held))
        payload[name] = Column(text, np.where(held, Kind.INT, Kind.TEXT).astype(np.uint8))
    order = KeyOrders([_named(order, names) for order in runs.orders], runs.codes)
    return batch.with_fields(payload=payload, order=order)


def _runs_text(
    order: KeyOrders,
    runs: _Runs,
    folded: Sequence[str],
    cells: _Cells,
    picked: Sequence[int],
    n: int,
) -> tuple[np.ndarray[Any, Any], pa.Array]:
    """Each (run, row) holding folded pairs, as run * n + row in that order, and the text of
    its pairs: `"key":value` each, as the writers write them, joined by commas."""
    of_key, row = np.nonzero(cells.present[picked])
    at = np.asarray(picked, np.int64)[of_key] * n + row  # each present cell's place
    run_of, nth = runs.of_cells(order, len(folded), of_key, row)
    values = cells.texts.take(pa.array(at))
    literal = pa.array(cells.kinds[at] != Kind.TEXT)
    heads = pa.array([json_key(key) for key in folded], pa.string()).take(pa.array(of_key))
    written = pc.if_else(literal, values, json_strings(values)).cast(pa.string())
    pairs = pc.binary_join_element_wise(heads, written, "")
    by = np.lexsort((nth, row, run_of))
    group = run_of[by] * n + row[by]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    offsets = pa.array(np.r_[starts, len(by)].astype(np.int32))
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, pairs.take(pa.array(by))), ",")
    return group[starts], joined


@dataclass(frozen=True)
class _Runs:
    """The batch's distinct orders with each run of folded keys as one key (its run's
    number, an int), re-coded (`codes`); the most runs a row has; and each folded key's run
    and place in it for each distinct order of the batch that names it (`slots`: the
    order's code times the number of folded keys plus the key's index among them, sorted;
    `runs` and `nths` beside them)."""

    orders: list[KeyOrder]
    codes: np.ndarray[Any, Any]
    most: int
    slots: np.ndarray[Any, Any]
    runs: np.ndarray[Any, Any]
    nths: np.ndarray[Any, Any]

    @classmethod
    def of(cls, order: KeyOrders, folded: Sequence[str]) -> _Runs:
        number = {key: at for at, key in enumerate(folded)}
        width = len(folded)
        index: dict[KeyOrder, int] = {}
        mapping = np.zeros(len(order.distinct), np.int32)
        slots: list[int] = []
        runs: list[int] = []
        nths: list[int] = []
        most = 0
        for at, (payload_keys, extra_keys) in enumerate(order.distinct):
            keys: list[Any] = []
            run, nth, base = -1, 0, at * width
            for key in payload_keys:
                k = number.get(key)
                if k is None:
                    keys.append(key)
                    continue
                if not keys or not isinstance(keys[-1], int):
                    run, nth = run + 1, 0
                    keys.append(run)
                slots.append(base + k)
                runs.append(run)
                nths.append(nth)
                nth += 1
            most = max(most, run + 1)
            mapping[at] = index.setdefault((tuple(keys), extra_keys), len(index))
        by = np.argsort(np.asarray(slots, np.int64), kind="stable")
        return cls(
            list(index),
            mapping[order.codes],
            most,
            np.asarray(slots, np.int64)[by],
            np.asarray(runs, np.int64)[by],
            np.asarray(nths, np.int64)[by],
        )

    def of_cells(
        self, order: KeyOrders, width: int, of_key: np.ndarray[Any, Any], row: Any
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Each cell's run (among its row's runs of folded keys) and place in it."""
        found = np.searchsorted(self.slots, order.codes[row].astype(np.int64) * width + of_key)
        return self.runs[found], self.nths[found]


def _named(order: KeyOrder, names: Sequence[FoldedKey]) -> KeyOrder:
    payload_keys, extra_keys = order
    return tuple(names[key] if isinstance(key, int) else key for key in payload_keys), extra_keys
