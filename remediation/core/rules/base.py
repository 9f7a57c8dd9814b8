"""What a rule returns (`Fix`), and how a rule handles the rows it takes one at a time.

A rule gets the rows that failed with its code, as a batch, and the run's `Context`. It returns
the batch after its changes (same rows, same order), the changes it made (`Changes`: which rows,
which rule and field, the values before and after), and the reason for each row it cannot fix.
Common shapes are computed on whole columns; the rest go through the rule's `row` function one
record at a time (`one_by_one`), which is also what the row API runs for a batch of one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from remediation.changes import Change, Context
from remediation.core.batch import from_records, key_orders
from remediation.core.column import as_string
from remediation.core.columns import Batch, Column, Indexes
from remediation.core.folding import fold_like
from remediation.core.keyorders import KeyOrders
from remediation.errors import Uncorrectable
from remediation.records import UsageRecord

RowRule = Callable[[UsageRecord, Context], list[Change]]


@dataclass(frozen=True, slots=True)
class Changes:
    """Changes made to rows `at` (a row appears once per change, in the order they were made)."""

    at: Indexes
    rule: str | Sequence[str]
    field: str | Sequence[str]
    before: Column
    after: Column

    def __len__(self) -> int:
        return len(self.at)


@dataclass(slots=True)
class Fix:
    batch: Batch
    changes: list[Changes] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # row index -> reason

    def fail(self, rows: Indexes, reason: str | Sequence[str]) -> None:
        reasons = [reason] * len(rows) if isinstance(reason, str) else reason
        self.failed.update(zip(rows.tolist(), reasons, strict=True))


Rule = Callable[[Batch, Context], Fix]


def everyone(batch: Batch) -> Indexes:
    return np.arange(len(batch), dtype=np.int64)


def one_by_one(batch: Batch, ctx: Context, row_rule: RowRule, rows: Indexes | None = None) -> Fix:
    """Apply `row_rule` to `rows` (all by default) of `batch`, one record at a time."""
    at = everyone(batch) if rows is None else rows
    if not len(at):
        return Fix(batch)
    old = batch.take(at)
    records = old.records()
    fix = Fix(batch)
    where: list[int] = []
    rules, fields, before, after = [], [], [], []
    for i, record in zip(at.tolist(), records, strict=True):
        try:
            made = row_rule(record, ctx)
        except Uncorrectable as exc:
            fix.failed[i] = exc.reason
            continue
        for change in made:
            where.append(i)
            rules.append(change.rule)
            fields.append(change.field)
            before.append(change.before)
            after.append(change.after)
    fix.batch = put(batch, at, old, records, ctx)
    if where:
        changed = np.asarray(where, np.int64)
        fix.changes.append(Changes(changed, rules, fields, Column.of(before), Column.of(after)))
    return fix


def put(batch: Batch, at: Indexes, old: Batch, records: list[UsageRecord], ctx: Context) -> Batch:
    """`batch` with rows `at` (which were `old`) replaced by `records`. Each record keeps its
    own key order, as the row API keeps it (a renamed key goes last in its row, whatever
    the other rows hold); keys the batch holds folded are folded again (`fold_like`)."""
    if not len(at):
        return batch
    return replace_rows(batch, at, fold_like(from_records(records), batch, ctx), old)


def replace_rows(batch: Batch, at: Indexes, new: Batch, old: Batch | None = None) -> Batch:
    """`batch` with its rows `at` taken from `new` (whose row i replaces row at[i]); only the
    columns that differ from `old` (those rows as they were) are rebuilt.

    A batch without key orders (CSV: the columns order every row's keys) gets them only when
    a new row's keys are in another order than the columns give."""
    if len(at) == len(batch) and np.array_equal(at, everyone(batch)):
        return new if batch.order is not None else _unordered(new)
    if old is None:
        old = batch.take(at)
    cores = {
        name: _merged(getattr(batch, name), at, getattr(old, name), getattr(new, name))
        for name in ("identifier", "timestamp", "event_name")
    }
    payload = _merged_keys(batch.payload, at, old.payload, new.payload, len(batch))
    extra = _merged_keys(batch.extra, at, old.extra, new.extra, len(batch))
    order = batch.order
    if order is None and new.order is not None and not follows(new.order, payload, extra):
        order = key_orders(batch)
    if order is not None and new.order is not None and new.order != old.order:
        order = order.replaced(at, new.order)
    return batch.with_fields(payload=payload, extra=extra, order=order, **cores)


def _unordered(batch: Batch) -> Batch:
    """`batch` without key orders when its columns give every row's keys in the same order."""
    if batch.order is None or not follows(batch.order, batch.payload, batch.extra):
        return batch
    return batch.with_fields(order=None)


def follows(orders: KeyOrders, payload: Mapping[str, Column], extra: Mapping[str, Column]) -> bool:
    """Whether each row's keys are in the order of the columns (checked per distinct order)."""
    for payload_keys, extra_keys in orders.distinct:
        for keys, columns in ((payload_keys, payload), (extra_keys, extra)):
            held = set(keys)
            if keys != tuple(key for key in columns if key in held):
                return False
    return True


def _merged(column: Column, at: Indexes, old: Column, new: Column) -> Column:
    if new is old or _same(old, new):
        return column
    return set_column(column, at, new)


def _same(a: Column, b: Column) -> bool:
    if not as_string(a.text).equals(as_string(b.text)):
        return False
    if a.kinds is None and b.kinds is None:
        return True
    return bool(np.array_equal(a.kind_array(), b.kind_array()))


def _merged_keys(
    columns: Mapping[str, Column],
    at: Indexes,
    old: Mapping[str, Column],
    new: Mapping[str, Column],
    length: int,
) -> dict[str, Column]:
    merged = dict(columns)
    for key in dict.fromkeys([*columns, *new]):
        before = old.get(key) or Column.absent(len(at))
        after = new.get(key) or Column.absent(len(at))
        merged[key] = _merged(columns.get(key) or Column.absent(length), at, before, after)
    return merged


def set_column(column: Column, at: Indexes, values: Column) -> Column:
    """`column` with rows `at` set to `values` (text and kinds)."""
    if not len(at):
        return column
    whole = pa.concat_arrays([as_string(column.text), as_string(values.text)])
    index = np.arange(len(column), dtype=np.int64)
    index[at] = len(column) + np.arange(len(at), dtype=np.int64)
    text = whole.take(pa.array(index))
    if column.kinds is None and values.kinds is None:
        return Column(text)
    kinds = column.kind_array().copy()
    kinds[at] = values.kind_array()
    return Column(text, kinds if kinds.any() else None)
