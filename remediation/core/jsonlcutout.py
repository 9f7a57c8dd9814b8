"""The values of lines of many shapes cut out at once into a batch's columns (`cut_out`): the
read of lines whose layouts are known, apart from the grouping of lines by shape (`jsonlshapes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.columns import Batch, Column, Kind
from remediation.core.jsonlbatch import (
    dotted,
    in_range,
    mask,
    no_payload,
    per_row,
    put_error_field,
)
from remediation.core.jsonllayouts import MAX_NUMBER_CHARS, Layout, Leaf
from remediation.core.jsonlrare import TRIMMED, is_rare, rare_columns
from remediation.core.keyorders import KeyOrder, KeyOrders
from remediation.jsonrecords import NO_PAYLOAD
from remediation.records import resolve_error


@dataclass(frozen=True)
class ShapesRead:
    """What `Shapes.read` took: lines (places in the batch), their rows, and how many lines
    each layout read."""

    lines: np.ndarray[Any, Any]
    batch: Batch | None
    hits: dict[Layout, int]


def cut_out(
    layouts: list[Layout],
    codes: np.ndarray[Any, Any],
    lines: pa.Array,
    places: np.ndarray[Any, Any],
    numbers: np.ndarray[Any, Any],
) -> ShapesRead:
    """The rows of `lines` (each of the shape `layouts[codes[i]]`): every value cut out of
    the lines split at their quotes, one gather per column for all shapes."""
    split = pc.split_pattern(lines, '"')
    offsets = split.offsets.to_numpy(zero_copy_only=False)
    starts = (offsets[:-1] - offsets[0]).astype(np.int64)
    pieces = pc.list_flatten(split)
    keep = np.ones(len(lines), bool)
    columns, errors = _cut_columns(layouts, codes, starts, pieces, keep)
    unnamed = [at for at, layout in enumerate(layouts) if NO_PAYLOAD in layout.extra_keys]
    if unnamed:
        columns[("extra", NO_PAYLOAD)] = no_payload(np.isin(codes, unnamed))
    code, message = _errors(layouts, codes, errors)
    orders = [(layout.payload_keys, layout.extra_keys) for layout in layouts]
    n = len(lines)
    batch = Batch(
        numbers[places].astype(np.int64),
        _core(columns, "identifier", n),
        _core(columns, "timestamp", n),
        _core(columns, "event_name", n),
        _keyed(columns, "payload"),
        _keyed(columns, "extra"),
        code,
        message,
        pa.nulls(n, pa.string()),
        _key_orders(orders, codes),
    )
    hits = _hits(layouts, codes, keep)
    if keep.all():
        return ShapesRead(places, batch, hits)
    at = np.flatnonzero(keep)
    return ShapesRead(places[at], batch.take(at), hits)


_Errors = list[tuple[tuple[str, ...], pa.Array, np.ndarray[Any, Any]]]


def _cut_columns(
    layouts: list[Layout],
    codes: np.ndarray[Any, Any],
    starts: np.ndarray[Any, Any],
    pieces: pa.Array,
    keep: np.ndarray[Any, Any],
) -> tuple[dict[tuple[str, str], Column | None], _Errors]:
    """Each column's values cut out of the pieces (by (group, key), in the order the layouts
    first name them), and the error fields' texts and kinds by path; `keep` cleared for the
    lines holding a value no column may take."""
    columns: dict[tuple[str, str], Column | None] = {}
    errors: _Errors = []
    counts = np.bincount(codes, minlength=len(layouts))
    rare: list[tuple[tuple[str, str], dict[int, Leaf]]] = []
    for (group, key, path), leaves in _leaves_by_column(layouts).items():
        if group in ("payload", "extra") and is_rare(leaves, counts, len(codes)):
            columns[(group, key)] = None  # its place kept: cut out below, with the others
            rare.append(((group, key), leaves))
            continue
        every = [leaves.get(at) for at in range(len(layouts))]
        texts, kinds, fine = _gathered(every, codes, starts, pieces)
        keep &= fine
        if group == "error":
            errors.append((path, texts, kinds))
        elif group != "ignored":
            columns[(group, key)] = _column(group, texts, kinds)
    if rare:
        for name, column in rare_columns(rare, codes, counts, starts, pieces, keep):
            columns[name] = column
    return columns, errors


def _core(columns: dict[tuple[str, str], Column | None], name: str, n: int) -> Column:
    return columns.get((name, name)) or Column.absent(n)


def _keyed(columns: dict[tuple[str, str], Column | None], group: str) -> dict[str, Column]:
    found = ((g, key, column) for (g, key), column in columns.items())
    return {key: column for g, key, column in found if g == group and column is not None}


def _hits(
    layouts: list[Layout], codes: np.ndarray[Any, Any], keep: np.ndarray[Any, Any]
) -> dict[Layout, int]:
    """How many of the lines kept each layout read."""
    kept = np.bincount(codes[keep], minlength=len(layouts)).tolist()
    hits: dict[Layout, int] = {}  # shapes apart only by true and false share a layout
    for layout, count in zip(layouts, kept, strict=True):
        hits[layout] = hits.get(layout, 0) + count
    return hits


def _leaves_by_column(
    layouts: list[Layout],
) -> dict[tuple[str, str, tuple[str, ...]], dict[int, Leaf]]:
    """Each column any layout has (group, key, path), with the leaf of each layout that has
    it (by the layout's place)."""
    found: dict[tuple[str, str, tuple[str, ...]], dict[int, Leaf]] = {}
    for at, layout in enumerate(layouts):
        for name, leaf in layout.columns:  # made once per layout
            column = found.get(name)
            if column is None:
                column = found[name] = {}
            column[at] = leaf
    return found


def _gathered(
    leaves: list[Leaf | None],
    codes: np.ndarray[Any, Any],
    starts: np.ndarray[Any, Any],
    pieces: pa.Array,
) -> tuple[pa.Array, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """One column's text (null where a row's shape lacks it), its kind per row, and which
    rows read as the line reader reads them (a number at most `MAX_NUMBER_CHARS` long; a
    float within a float's range, its text kept as it is)."""
    piece = np.asarray([-1 if leaf is None else leaf.piece for leaf in leaves], np.int64)[codes]
    kinds = np.asarray([0 if leaf is None else leaf.kind for leaf in leaves], np.uint8)[codes]
    absent = piece < 0
    at = pa.array(starts + np.where(absent, 0, piece), mask=absent)
    texts = pieces.take(at)
    bare = kinds != Kind.TEXT  # a number, true, false or null: not between quotes
    fine = np.ones(len(codes), bool)
    if bare.any():
        texts = pc.if_else(pa.array(bare), pc.utf8_trim(texts, TRIMMED), texts)
        numbers = kinds == Kind.INT
        if numbers.any():
            fine &= ~numbers | mask(
                pc.fill_null(pc.less_equal(pc.utf8_length(texts), MAX_NUMBER_CHARS), True)
            )
            fine &= ~numbers | in_range(texts)
            kinds[numbers & dotted(texts)] = Kind.FLOAT
    return texts, kinds, fine


def _column(group: str, texts: pa.Array, kinds: np.ndarray[Any, Any]) -> Column:
    """A column as `layout_batch` makes it: the identifier and event name as text ("" as
    absent), the rest with their kinds (none when every row's is text)."""
    if group in ("identifier", "event_name"):
        return Column(pc.if_else(pc.equal(texts, ""), pa.scalar(None, pa.string()), texts))
    return Column(texts, kinds if kinds.any() else None)


def _errors(
    layouts: list[Layout],
    codes: np.ndarray[Any, Any],
    errors: list[tuple[tuple[str, ...], pa.Array, np.ndarray[Any, Any]]],
) -> tuple[pa.Array, pa.Array]:
    """(code, message) of each row, by `resolve_error` of its error fields, once per shape and
    distinct set of values (a shape with no error fields: none)."""
    n = len(codes)
    if not errors:
        return pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
    shape = pa.array(codes.astype(np.int64)).cast(pa.string())
    parts = [texts for _, texts, _ in errors]
    keyed = pc.binary_join_element_wise(
        shape, *parts, "\x1f", null_handling="replace", null_replacement=""
    )
    encoded = pc.dictionary_encode(keyed)
    found_codes, found_messages = [], []
    for joined in encoded.dictionary.to_pylist():
        which, *texts = joined.split("\x1f")
        layout = layouts[int(which)]
        fields: dict[str, Any] = {}
        for text, leaf in zip(texts, _error_leaves(layout, errors), strict=True):
            if leaf is not None:
                put_error_field(fields, leaf, text)
        code, message = resolve_error(fields) if fields else (None, None)
        found_codes.append(code)
        found_messages.append(message)
    return per_row(found_codes, found_messages, encoded.indices)


def _error_leaves(
    layout: Layout, errors: list[tuple[tuple[str, ...], pa.Array, np.ndarray[Any, Any]]]
) -> list[Leaf | None]:
    by_path = {leaf.path: leaf for leaf in layout.leaves if leaf.group == "error"}
    return [by_path.get(path) for path, _, _ in errors]


def _key_orders(orders: list[KeyOrder], codes: np.ndarray[Any, Any]) -> KeyOrders:
    index: dict[KeyOrder, int] = {}
    mapping = np.asarray([index.setdefault(order, len(index)) for order in orders], np.int32)
    return KeyOrders(list(index), mapping[codes])
