"""What a row sends, as a 64-bit digest: whether a row an object version holds now is the one
an earlier version sent (a customer may fix a row by hand and upload the file again before
Stripe's error report about it comes).

A row's digest is a sum (mod 2^64) of one mixed term per part: its event name (`str()` of
it), its timestamp as Unix seconds (None when it has none), and one term per payload key it
holds, of the key and its value as sent (`payload_text`); a sum, so the keys' order does not
count. A text's term is a polynomial sum of its bytes with its length, through splitmix64's
finalizer. The poller digests whole batches of columns (`batch_digests`: numpy over Arrow's
buffers, no Python per row: a per-row `blake2b` of the joined row took the poller's parse +
validate + batch from ~100,000 to 67,475 rows/s on a slow machine, joining the row's parts
with Arrow first still cost 1.2 µs a row); an error report digests the few rows it compares
as records (`record_digests`), through the same functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.column import as_string
from remediation.core.columns import Batch, Column, Kind
from remediation.core.valuekinds import value_of
from remediation.fieldvalues import parse_timestamp, payload_text
from remediation.records import UsageRecord

Digests = npt.NDArray[np.int64]
Words = npt.NDArray[np.uint64]

# Odd, so that a change of one byte always changes a text's sum (b·p^k mod 2^64 ≠ 0), and
# invertible mod 2^64
_MULTIPLIER = np.uint64(0x100000001B3)
_INVERSE = np.uint64(pow(int(_MULTIPLIER), -1, 2**64))
# What each part's term is mixed with, so equal texts in two parts give two terms
_NAME, _TIMESTAMP, _NO_TIMESTAMP = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xC2B2AE3D27D4EB4F),
    np.uint64(0x165667B19E3779F9),
)
_tables: tuple[Words, Words] = (np.ones(1, np.uint64), np.ones(1, np.uint64))


def batch_digests(
    batch: Batch, timestamps: Sequence[int | None], sent: Mapping[str, pa.Array]
) -> Digests:
    """The digest of every row of a batch. `timestamps`: each row's, parsed; `sent`: each
    payload key's values as sent (`sent_array`; null where the row does not hold the key)."""
    return _combined(_names(batch.event_name), timestamps, sent)


def row_digest(event_name: object, timestamp: int | None, payload: Mapping[str, str]) -> int:
    """The digest of one row (payload values as texts, as sent)."""
    names = pa.array([str(event_name)], pa.string())
    sent = {key: pa.array([value], pa.string()) for key, value in payload.items()}
    return int(_combined(names, [timestamp], sent)[0])


def record_digests(records: Sequence[UsageRecord]) -> list[int]:
    """The digests of rows read as records: the same as `batch_digests` of their columns."""
    if not records:
        return []
    names = pa.array([str(record.event_name) for record in records], pa.string())
    stamps = [parse_timestamp(record.timestamp) for record in records]
    keys = {key for record in records for key in record.payload}
    sent = {
        key: pa.array(
            [
                None if (value := record.payload.get(key)) is None else payload_text(value)
                for record in records
            ],
            pa.string(),
        )
        for key in keys
    }
    return [int(digest) for digest in _combined(names, stamps, sent)]


def text_digests(array: pa.Array) -> Words:
    """Each text's own 64-bit digest (a null reads as ""): equal texts, equal digests."""
    return _mixed(_texts(array))


def sent_array(column: Column, texts: list[str | None] | None = None) -> pa.Array:
    """A payload column's values as sent (`payload_text`), as text; `texts`: those values when
    the caller has them as a list already."""
    if column.kinds is None or not np.isin(column.kinds, _CONVERTED).any():
        return as_string(column.text)
    return pa.array(texts if texts is not None else sent_texts(column), pa.string())


def sent_texts(column: Column) -> list[str | None]:
    """`payload_text` of each value of a column (None where the key is absent or null)."""
    texts: list[str | None] = column.text.to_pylist()
    if column.kinds is None:
        return texts
    kinds = column.kinds
    for i in np.flatnonzero(np.isin(kinds, _CONVERTED)).tolist():
        value = value_of(texts[i], int(kinds[i]))
        texts[i] = None if value is None else payload_text(value)  # a null: not sent
    return texts


# Kinds whose text is not what `payload_text` sends (a float's plain number, an object's JSON
# text as `dumps` writes it; a JSON null is not sent at all, as a CSV's empty cell)
_CONVERTED = np.asarray([Kind.FLOAT, Kind.JSON, Kind.NULL], np.uint8)


def _names(column: Column) -> pa.Array:
    """`str()` of each row's event name as a record holds it ("None" for none)."""
    if column.kinds is None or not (column.kinds != Kind.TEXT).any():
        return as_string(column.text).fill_null("None")
    return pa.array([str(value) for value in column.values()], pa.string())


def _combined(
    names: pa.Array, timestamps: Sequence[int | None], sent: Mapping[str, pa.Array]
) -> Digests:
    stamps = _int64(timestamps)
    known = np.asarray(stamps.is_valid(), bool)
    values = stamps.fill_null(0).to_numpy().view(np.uint64)
    encoded = pc.dictionary_encode(names)  # few event names: each digested once
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    total: Words = _mixed(_texts(encoded.dictionary) ^ _NAME)[indices]
    total += _mixed(np.where(known, values ^ _TIMESTAMP, _NO_TIMESTAMP))
    if sent:
        total += _payload_terms(sent, len(names))
    digests: Digests = total.view(np.int64)
    return digests


def _payload_terms(sent: Mapping[str, pa.Array], n: int) -> Words:
    """Each row's sum of its payload keys' terms: every key's values digested at once, one
    after the other (rows naming keys of their own make a batch of a thousand keys: a
    digest each cost ~10 numpy calls, 46 % of the poller's time on such rows)."""
    keys = list(sent)
    texts = pa.concat_arrays([as_string(sent[key]) for key in keys])
    own = np.repeat(_keys(tuple(keys)), n)
    terms = np.where(np.asarray(texts.is_valid(), bool), _mixed(_texts(texts) ^ own), 0)
    summed: Words = terms.astype(np.uint64).reshape(len(keys), n).sum(axis=0, dtype=np.uint64)
    return summed


@lru_cache(maxsize=64)
def _keys(keys: tuple[str, ...]) -> Words:
    """Each key's own digest (a batch's keys: files repeat theirs batch after batch)."""
    return _texts(pa.array(keys, pa.string()))


def _int64(timestamps: Sequence[int | None]) -> pa.Array:
    """The timestamps as int64, one past 64 bits (digits, but no time: a hostile row) taken
    mod 2^64."""
    try:
        return pa.array(timestamps, pa.int64())
    except OverflowError:
        return pa.array([None if t is None else _wrapped(t) for t in timestamps], pa.int64())


def _wrapped(value: int) -> int:
    return (value + 2**63) % 2**64 - 2**63


def _texts(array: pa.Array) -> Words:
    """Each text's Σ b_j·p^j mod 2^64 (j from the text's start), its length + 1 mixed in
    (a null reads as ""): summed over the array's bytes at once, each row's sum shifted back
    to its start by p^-start."""
    array = as_string(array)
    count = len(array)
    _validity, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32, count + 1, array.offset * 4)
    first, last = int(offsets[0]), int(offsets[-1])
    size = last - first
    powers, inverses = _power_tables(size + 1)
    sums = np.zeros(size + 1, np.uint64)
    if size:
        data = np.frombuffer(data_buffer, np.uint8, size, first)
        np.cumsum(data * powers[:size], out=sums[1:])
    starts, ends = offsets[:-1] - first, offsets[1:] - first
    own: Words = (sums[ends] - sums[starts]) * inverses[starts]
    return own ^ (ends - starts + 1).astype(np.uint64)


def _mixed(values: Words) -> Words:
    """splitmix64's finalizer: every bit of the input moves every bit of the output."""
    values = values ^ (values >> np.uint64(30))
    values = values * np.uint64(0xBF58476D1CE4E5B9)
    values = values ^ (values >> np.uint64(27))
    values = values * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def _power_tables(size: int) -> tuple[Words, Words]:
    """p^k and p^-k mod 2^64 for k < size (grown as needed, kept). Published as one tuple: a
    thread reading them while another grows them gets both old or both new, never a grown
    `powers` beside the old, shorter `inverses`."""
    global _tables
    tables = _tables
    if len(tables[0]) < size:
        length = max(size, 2 * len(tables[0]))
        tables = (_cumulative(_MULTIPLIER, length), _cumulative(_INVERSE, length))
        _tables = tables
    return tables


def _cumulative(factor: np.uint64, length: int) -> Words:
    grown = np.full(length, factor, np.uint64)
    grown[0] = 1
    return np.cumprod(grown, dtype=np.uint64)
