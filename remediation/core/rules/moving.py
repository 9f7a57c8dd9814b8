"""Rows of a meter rule moved to the meter picked for their event name, on the column: the pick
made once per distinct name, the rows of a name nothing picks refused with the reason the row
rule gives one of them, and only rows whose keys must be renamed taken one at a time (the
rules themselves, and what they pick: `meters`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from remediation.changes import Context
from remediation.core.column import Mask
from remediation.core.columns import Batch, Column, Indexes, Kind
from remediation.core.rules.base import Changes, Fix, RowRule, one_by_one, set_column
from remediation.core.textmeasures import byte_lengths, mask
from remediation.errors import Uncorrectable
from remediation.meters import Meter


def moved(
    batch: Batch,
    ctx: Context,
    target: Callable[[str | None], tuple[str, Meter] | None],
    row_rule: RowRule,
    moving: bool = False,
) -> Fix:
    """Rows sent to the meter `target` picks for their event name (with the rule that picked
    it), once per distinct name; rows whose keys must be renamed go through `row_rule`.
    `moving`: the meter a row names is its old meter, whose keys move (`align_keys`)."""
    names = _NameGroups.of(batch.event_name.text)
    picks = _Picks(len(batch), len(names.distinct))
    for at, name in enumerate(names.distinct):
        named = names.rows(at)
        if len(named):
            picks.pick(batch, ctx, target, row_rule, moving, at, name, named)
    alone = np.ones(len(batch), bool)
    alone[picks.simple] = False
    alone[list(picks.failed)] = False
    fix = one_by_one(batch, ctx, row_rule, np.flatnonzero(alone))
    fix.failed.update(picks.failed)
    rows = np.flatnonzero(picks.simple)
    if len(rows):
        _rename(fix, names, picks.picks, rows)
    return fix


@dataclass(frozen=True)
class _NameGroups:
    """A batch's distinct event names (None last: absent) and each one's rows, grouped once
    (not a pass over the batch per distinct name)."""

    texts: pa.Array
    distinct: list[str | None]
    positions: npt.NDArray[np.int64]  # each row's name, by its place in `distinct`
    order: npt.NDArray[np.intp]
    bounds: npt.NDArray[np.intp]

    @classmethod
    def of(cls, names: pa.Array) -> _NameGroups:
        encoded = pa.compute.dictionary_encode(names)
        distinct: list[str | None] = [*encoded.dictionary.to_pylist(), None]  # None: absent
        absent = len(distinct) - 1
        positions = encoded.indices.fill_null(absent).to_numpy(zero_copy_only=False)
        positions = positions.astype(np.int64)
        order = np.argsort(positions, kind="stable")
        bounds = np.searchsorted(positions[order], np.arange(len(distinct) + 1))
        return cls(names, distinct, positions, order, bounds)

    def rows(self, at: int) -> npt.NDArray[np.intp]:
        """The rows of the `at`-th distinct name."""
        return self.order[self.bounds[at] : self.bounds[at + 1]]


class _Picks:
    """What `target` picked for each distinct name; the rows sent by a change of their name
    alone (`simple`) and the rows refused, with their reasons."""

    def __init__(self, rows: int, names: int) -> None:
        self.picks: list[tuple[str, Meter] | None] = [None] * names
        self.simple = np.zeros(rows, bool)
        self.failed: dict[int, str] = {}

    def pick(
        self,
        batch: Batch,
        ctx: Context,
        target: Callable[[str | None], tuple[str, Meter] | None],
        row_rule: RowRule,
        moving: bool,
        at: int,
        name: str | None,
        named: npt.NDArray[np.intp],
    ) -> None:
        pick = self.picks[at] = target(name)
        if pick is None:
            # the row rule refuses every row of a name nothing picks, with the same reason:
            # asked once (1M rows of a name no meter matches took 36 s one row at a time)
            reason = _refusal(batch, ctx, row_rule, int(named[0]))
            if reason is not None:
                self.failed.update(dict.fromkeys(named.tolist(), reason))
        elif _keeps_keys(batch, pick[1], ctx.index.get(name) if moving else None, ctx):
            self.simple[named] = True


def _rename(
    fix: Fix, names: _NameGroups, picks: list[tuple[str, Meter] | None], rows: Indexes
) -> None:
    """One change for every name: each row's new name and rule by its name's pick."""
    picked = names.positions[rows]
    new_names = pa.array([p[1].event_name if p else None for p in picks], pa.string())
    rules = [p[0] if p else "" for p in picks]
    after = Column(new_names.take(pa.array(picked)))
    fix.batch = fix.batch.with_fields(event_name=set_column(fix.batch.event_name, rows, after))
    rule: str | list[str] = rules[int(picked[0])]
    if len({rules[i] for i in set(picked.tolist())}) > 1:
        rule = [rules[i] for i in picked.tolist()]
    before = Column(names.texts.take(pa.array(rows)))
    fix.changes.append(Changes(rows, rule, "event_name", before, after))


def _refusal(batch: Batch, ctx: Context, row_rule: RowRule, row: int) -> str | None:
    """Why `row_rule` refuses row `row` of `batch` (None: it does not)."""
    record = batch.take(np.array([row])).records()[0]
    try:
        row_rule(record, ctx)
    except Uncorrectable as exc:
        return exc.reason
    return None


def _keeps_keys(batch: Batch, meter: Meter, old: Meter | None, ctx: Context) -> bool:
    """Every row holds something under the meter's customer and value keys, and none the
    `old` meter's keys that move to them (no renaming: `align_keys`), nor an alias of them
    (a second amount or customer, which `align_keys` refuses)."""
    for key in (meter.customer_key, meter.value_key):
        column = batch.payload.get(key)
        if column is None or not _held(column).all():
            return False
    keys = {meter.customer_key, meter.value_key, *meter.dimension_keys}
    aliases = {*ctx.rules.customer_keys, *ctx.rules.value_keys}
    for key, column in batch.payload.items():
        if key not in keys and key.lower() in aliases and column.present().any():
            return False
    if old is None:
        return True
    roles = ((old.customer_key, meter.customer_key), (old.value_key, meter.value_key))
    for source in (s for s, t in roles if s != t):
        column = batch.payload.get(source)
        if column is not None and column.present().any():
            return False
    return True


def _held(column: Column) -> Mask:
    """Rows whose field holds something (`keys.holds`): not absent, not blank text, not a JSON
    null (a JSON `""` is a CSV's empty cell: an alias may fill it, `align_keys`)."""
    held = column.present() & (column.mark("bytes", byte_lengths) > 0)
    held &= ~mask(pc.utf8_is_space(column.text))
    if column.kinds is not None:
        held &= column.kinds != Kind.NULL
    return held
