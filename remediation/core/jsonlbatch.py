"""A JSON Lines layout's values as a batch of rows (`layout_batch`), and the helpers
`jsonlcutout` shares with it: which numbers are floats or within a float's range, and each
row's error code and message, resolved once per distinct set of values (`jsonllayouts`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.columns import Batch, Column, Kind
from remediation.core.jsonllayouts import LITERALS, Layout, Leaf
from remediation.core.keyorders import KeyOrders
from remediation.jsonnumbers import json_float
from remediation.jsonrecords import NO_PAYLOAD
from remediation.records import resolve_error


def layout_batch(layout: Layout, values: list[pa.Array], numbers: np.ndarray[Any, Any]) -> Batch:
    n = len(numbers)
    columns: dict[tuple[str, str], Column] = {}
    errors: list[tuple[Leaf, pa.Array]] = []
    for leaf, texts in zip(layout.leaves, values, strict=True):
        if leaf.group == "error":
            errors.append((leaf, texts))
            continue
        kinds = None
        if leaf.kind == Kind.INT:
            kinds = np.where(dotted(texts), np.uint8(Kind.FLOAT), np.uint8(Kind.INT))
        elif leaf.kind in LITERALS:  # "true", "false" or "null", as `present_text` has them
            kinds = np.full(n, leaf.kind, np.uint8)
        if leaf.group in ("identifier", "event_name"):
            kinds = None  # text (a number there is left to the record path), "" as absent
            texts = pc.if_else(pc.equal(texts, ""), pa.scalar(None, pa.string()), texts)
        columns[(leaf.group, leaf.key)] = Column(texts, kinds)
    if NO_PAYLOAD in layout.extra_keys:
        columns[("extra", NO_PAYLOAD)] = no_payload(np.ones(n, bool))
    code, message = errors_of(errors, n)

    def core(name: str) -> Column:
        return columns.get((name, name)) or Column.absent(n)

    return Batch(
        numbers.astype(np.int64),
        core("identifier"),
        core("timestamp"),
        core("event_name"),
        {key: columns[("payload", key)] for key in layout.payload_keys},
        {key: columns[("extra", key)] for key in layout.extra_keys},
        code,
        message,
        pa.nulls(n, pa.string()),
        KeyOrders.same((layout.payload_keys, layout.extra_keys), n),
    )


def no_payload(rows: np.ndarray[Any, Any]) -> Column:
    """The mark of the rows (`rows` true) that name no payload (`jsonrecords.NO_PAYLOAD`), as
    the record path makes it: true there, absent elsewhere."""
    texts = pc.if_else(pa.array(rows), pa.scalar("true"), pa.scalar(None, pa.string()))
    return Column(texts, np.where(rows, np.uint8(Kind.BOOL), np.uint8(Kind.TEXT)))


def dotted(numbers: pa.Array) -> np.ndarray[Any, Any]:
    """Which numbers are floats (their text has a point)."""
    return mask(pc.match_substring(numbers, "."))


# A float's text this long or shorter is within a float's range (1.8e308 has 309 digits)
_SHORT_FLOAT = 300


def in_range(numbers: pa.Array) -> np.ndarray[Any, Any]:
    """Which numbers the line reader takes: all but a float past a float's range, which it
    refuses (`jsonvalues`); only floats longer than `_SHORT_FLOAT` are read to tell."""
    fine = np.ones(len(numbers), bool)
    long = pc.fill_null(pc.greater(pc.utf8_length(numbers), _SHORT_FLOAT), False)
    at = np.flatnonzero(mask(long) & dotted(numbers))
    if len(at):
        texts = numbers.take(pa.array(at)).to_pylist()
        fine[at] = [math.isfinite(float(text)) for text in texts]
    return fine


def mask(flags: pa.Array) -> np.ndarray[Any, Any]:
    return np.asarray(flags.to_numpy(zero_copy_only=False), bool)


def errors_of(errors: list[tuple[Leaf, pa.Array]], n: int) -> tuple[pa.Array, pa.Array]:
    """(code, message) of each row, by `resolve_error`, once per distinct set of values."""
    if not errors:
        return pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
    keyed = (
        errors[0][1]
        if len(errors) == 1
        else pc.binary_join_element_wise(*[values for _, values in errors], "\x1f")
    )
    encoded = pc.dictionary_encode(keyed)
    codes, messages = [], []
    for joined in encoded.dictionary.to_pylist():
        texts = [joined] if len(errors) == 1 else joined.split("\x1f")
        fields: dict[str, Any] = {}
        for (leaf, _), text in zip(errors, texts, strict=True):
            put_error_field(fields, leaf, text)
        code, message = resolve_error(fields)
        codes.append(code)
        messages.append(message)
    return per_row(codes, messages, encoded.indices)


def per_row(
    codes: list[str | None], messages: list[str | None], indices: pa.Array
) -> tuple[pa.Array, pa.Array]:
    """(code, message) of each row, from those of each distinct set of error values."""
    return (
        pa.array(codes, pa.string()).take(indices),
        pa.array(messages, pa.string()).take(indices),
    )


def put_error_field(fields: dict[str, Any], leaf: Leaf, text: str) -> None:
    """An error leaf's value, from its text, into the fields `resolve_error` reads (`learn`
    takes no true, false or null there: text or a number)."""
    value: object = text
    if leaf.kind == Kind.INT:
        value = json_float(text) if "." in text else int(text)
    if len(leaf.path) == 2:
        fields.setdefault(leaf.path[0], {})[leaf.path[1]] = value
    else:
        fields[leaf.path[0]] = value
