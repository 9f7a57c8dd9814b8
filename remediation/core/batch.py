"""A batch of usage rows held as columns (`Batch`): what readers yield, rules read and writers
consume, and the conversions to and from `UsageRecord` (`from_records`, `Batch.records`: the
row API is a batch of one). Joining batches is apart (`batchjoin`), and so is cutting records
into batches (`batchbounds`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from remediation.core.column import Column, Composed, Indexes
from remediation.core.keyorders import FoldedKey, KeyOrders
from remediation.core.valuekinds import Kind, present_text, value_of
from remediation.jsonnumbers import loads
from remediation.records import UsageRecord


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows of one input, in input order; `rows` numbers them (1-based, header excluded).

    `payload` and `extra` hold one column per key any row has (null where a row lacks it).
    `order`, when set (JSON), lists per row its payload and extra keys in their file order;
    without it a row's keys follow the columns' order (CSV, where the header fixes them).
    """

    rows: Indexes
    identifier: Column
    timestamp: Column
    event_name: Column
    payload: Mapping[str, Column]
    extra: Mapping[str, Column]
    # Normalized error codes (null: none), as `records.resolve_error` gives them; the error
    # messages; the reader's reason for a broken row (null for the others). Given as arrays,
    # held as columns: rows taken are gathered only when read (the rounds and the writers
    # take rows many times, and mostly never read these).
    code_column: Column
    message_column: Column
    malformed_column: Column
    order: KeyOrders | None = field(default=None)

    def __post_init__(self) -> None:
        for name in ("code_column", "message_column", "malformed_column"):
            value = getattr(self, name)
            if not isinstance(value, Column):
                object.__setattr__(self, name, Column(value))

    @property
    def error_code(self) -> pa.Array:
        return self.code_column.text

    @property
    def error_message(self) -> pa.Array:
        return self.message_column.text

    @property
    def malformed(self) -> pa.Array:
        return self.malformed_column.text

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, indexes: Indexes) -> Batch:
        at = pa.array(indexes, pa.int64())
        composed = Composed(at)
        return Batch(
            self.rows[indexes],
            self.identifier.take(indexes, at, composed),
            self.timestamp.take(indexes, at, composed),
            self.event_name.take(indexes, at, composed),
            {k: c.take(indexes, at, composed) for k, c in self.payload.items()},
            {k: c.take(indexes, at, composed) for k, c in self.extra.items()},
            _taken(self.code_column, indexes, composed),
            _taken(self.message_column, indexes, composed),
            _taken(self.malformed_column, indexes, composed),
            self.order.take(indexes) if self.order is not None else None,
        )

    def with_fields(self, **changes: Any) -> Batch:
        return replace(self, **changes)

    def records(self) -> list[UsageRecord]:
        """The rows as records (for the few rows a rule handles one by one, and JSON output)."""
        cores = [c.values() for c in (self.identifier, self.timestamp, self.event_name)]
        if any(type(k) is FoldedKey for k in self.payload):
            return _unfolded(self._records_of(cores))
        return self._records_of(cores)

    def _records_of(self, cores: list[list[object]]) -> list[UsageRecord]:
        payload = {k: _present_values(c, type(k) is FoldedKey) for k, c in self.payload.items()}
        extra = {k: _present_values(c) for k, c in self.extra.items()}
        codes, messages = self.error_code.to_pylist(), self.error_message.to_pylist()
        broken = self.malformed.to_pylist()
        orders = list(self.order) if self.order is not None else None
        out = []
        for i, number in enumerate(self.rows.tolist()):
            keys, extra_keys = orders[i] if orders is not None else (payload, extra)
            out.append(
                UsageRecord(
                    number,
                    _text_or_none(cores[0][i]),
                    cores[1][i],
                    _text_or_none(cores[2][i]),
                    {k: v for k in keys if (v := payload[k][i]) is not _ABSENT},
                    {k: v for k in extra_keys if (v := extra[k][i]) is not _ABSENT},
                    codes[i],
                    messages[i],
                    broken[i],
                )
            )
        return out


def _unfolded(records: list[UsageRecord]) -> list[UsageRecord]:
    """The records with their folded keys' pairs back in their places (`folding`)."""
    for record in records:
        if any(type(k) is FoldedKey for k in record.payload):
            pairs: dict[str, object] = {}
            for key, value in record.payload.items():
                if type(key) is FoldedKey:
                    assert isinstance(value, str)
                    pairs.update(loads("{" + value + "}"))
                else:
                    pairs[key] = value
            record.payload = pairs
    return records


_ABSENT: Any = object()
# A column's value types when every value is text (or absent): no kinds to keep.
_TEXT_OR_ABSENT = frozenset({str, type(_ABSENT)})


def _taken(column: Column, indexes: Indexes, composed: Composed) -> Column:
    """Rows `indexes` of a column (no gather when every row is null: a file without
    malformed rows, or without error columns)."""
    if all_null(column):
        return Column(pa.nulls(len(indexes), pa.string()))
    return column.take(indexes, composed.at, composed)


def all_null(column: Column) -> bool:
    """Whether a column is known to be null throughout, without gathering it."""
    known = column._text if column._text is not None else column._base
    return known is not None and known.null_count == len(known) and column.kinds is None


def _present_values(column: Column, as_text: bool = False) -> list[object]:
    """Typed values, `_ABSENT` where the key is missing (a JSON null is a present None);
    `as_text`: the texts (a folded key's pairs)."""
    texts = column.text.to_pylist()
    kinds = column.kinds.tolist() if column.kinds is not None and not as_text else None
    if kinds is None:
        return [_ABSENT if t is None else t for t in texts]
    return [_ABSENT if t is None else value_of(t, k) for t, k in zip(texts, kinds, strict=True)]


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def from_records(records: Sequence[UsageRecord]) -> Batch:
    """A batch of records (JSON rows, or the rows a rule handled one by one), each row's key
    order kept (`Batch.order`)."""
    payloads = [r.payload for r in records]
    extras = [r.extra for r in records]
    return Batch(
        np.fromiter((r.row_number for r in records), np.int64, len(records)),
        Column.of([r.identifier for r in records]),
        Column.of([r.timestamp for r in records]),
        Column.of([r.event_name for r in records]),
        {k: _keyed(payloads, k) for k in key_union(payloads)},
        {k: _keyed(extras, k) for k in key_union(extras)},
        pa.array([r.error_code for r in records], pa.string()),
        pa.array([r.error_message for r in records], pa.string()),
        pa.array([r.malformed for r in records], pa.string()),
        KeyOrders.of((tuple(r.payload), tuple(r.extra)) for r in records),
    )


def key_union(mappings: Iterable[Mapping[str, object]]) -> list[str]:
    """Every key of the mappings, in first-seen order (rows mostly share their keys: a row
    adding none is one comparison, no copy; 390 -> 180 ns a row)."""
    keys: dict[str, None] = {}
    for mapping in mappings:
        if not keys.keys() >= mapping.keys():
            keys.update(dict.fromkeys(mapping))
    return list(keys)


def _keyed(mappings: Sequence[Mapping[str, object]], key: str) -> Column:
    """One key of every row (absent where a row lacks it; a JSON null is present)."""
    values = [m.get(key, _ABSENT) for m in mappings]
    if set(map(type, values)) <= _TEXT_OR_ABSENT:  # CSV rows, most JSON keys
        return Column(pa.array([None if v is _ABSENT else v for v in values], pa.string()))
    texts: list[str | None] = []
    kinds: list[int] = []
    for value in values:
        text, kind = (None, Kind.TEXT) if value is _ABSENT else present_text(value)
        texts.append(text)
        kinds.append(kind)
    array = np.asarray(kinds, np.uint8)
    return Column(pa.array(texts, pa.string()), array if array.any() else None)


def key_orders(batch: Batch) -> KeyOrders:
    """Each row's keys: its own order, or the columns' order of the keys it has. A row's
    presence across the columns is one pattern (a bit per column, up to 63 columns in one
    number); the few distinct patterns a batch has are made orders once each, coded in the
    order rows first show them."""
    if batch.order is not None:
        return batch.order
    columns = [*batch.payload.values(), *batch.extra.values()]
    if not columns:
        return KeyOrders.same(((), ()), len(batch))
    present = np.column_stack([column.present() for column in columns])
    if len(columns) < 64:
        bits = np.left_shift(np.int64(1), np.arange(len(columns), dtype=np.int64))
        _, first, of_row = np.unique(present @ bits, return_index=True, return_inverse=True)
    else:
        _, first, of_row = np.unique(present, axis=0, return_index=True, return_inverse=True)
    by_first = np.argsort(first, kind="stable")
    code = np.empty(len(first), np.int32)
    code[by_first] = np.arange(len(first), dtype=np.int32)
    payload, extra = list(batch.payload), list(batch.extra)
    distinct = []
    for pattern in present[first[by_first]].tolist():
        distinct.append(
            (
                tuple(k for k, there in zip(payload, pattern, strict=False) if there),
                tuple(k for k, there in zip(extra, pattern[len(payload) :], strict=True) if there),
            )
        )
    return KeyOrders(distinct, code[of_row.reshape(-1)])
