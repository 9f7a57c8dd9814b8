"""Records cut into batches within a batch's bounds: its cells (`MAX_BATCH_CELLS`) and its
distinct keys (`MAX_BATCH_KEYS`), for the records of a JSON array (`record_batches`) and the
lines of a JSON Lines block (`cell_spans`). Apart from the batch (`batch`): the bounds are a
cost budget of the engine, not the shape of the data; `_past_bounds` reads them here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from remediation.core.batch import Batch, from_records
from remediation.records import UsageRecord

# A batch's cells, its rows times its distinct keys, at most (a batch of 8,192 rows holds up
# to 64 keys). Every distinct key of a batch is a column of it, worked on by every check and
# writer: rows each naming keys of their own cost the square of their number in one batch
# (2,000 rows of 5 such keys took 20 s), so a batch is cut where its cells would pass this.
MAX_BATCH_CELLS = 1 << 19
# And where it would hold more distinct keys than this and `SPARSE` times as many as its widest
# row names: mostly empty columns, each a column of the batch as read (the keys few rows name
# are folded into a value of their pairs a row before they are checked: `folding`). Rows of 5
# keys of their own, 20,000 of them, through `meterfix remediate`: 5.0 s in batches of ~200
# rows and 1,024 keys, 6.5 s of 512, 9.8 s of 256 (16 s before folding), peak RSS 130-134 MB;
# 2,048: 5.0 s, 150 MB. Rows that share their keys, however many, are cut by their cells alone.
MAX_BATCH_KEYS = 1024
SPARSE = 4
# Records (a JSON array's elements the array reader reads, and other records) are cut where
# their texts would pass this many characters (a longer record alone), as JSON Lines batches
# are by their lines' bytes (`jsonlread.SLICE_BYTES`): 50 elements of 2 MB were one batch of
# 439 MB.
MAX_BATCH_CHARS = 4 << 20


def _past_bounds(rows: int, keys: int, widest: int) -> bool:
    """A batch of `rows` rows holding `keys` distinct keys, its widest row naming `widest`, is
    past the bounds (`MAX_BATCH_CELLS`, `MAX_BATCH_KEYS`)."""
    return rows * keys > MAX_BATCH_CELLS or (keys > MAX_BATCH_KEYS and keys > SPARSE * widest)


def record_batches(records: Iterable[UsageRecord], size: int) -> Iterator[Batch]:
    """Records as batches of at most `size` rows, within `MAX_BATCH_CELLS`, `MAX_BATCH_KEYS`
    and `MAX_BATCH_CHARS` (a row past them alone), `from_records` of each chunk."""
    chunk: list[UsageRecord] = []
    payload: set[str] = set()
    extra: set[str] = set()
    widest = chars = 0
    for record in records:
        new = _new_keys(record.payload, payload) + _new_keys(record.extra, extra)
        wide = max(widest, len(record.payload) + len(record.extra))
        size_of = _chars(record)
        past = _past_bounds(len(chunk) + 1, len(payload) + len(extra) + new, wide)
        if chunk and (past or chars + size_of > MAX_BATCH_CHARS):
            yield from_records(chunk)
            chunk, payload, extra, chars = [], set(), set(), 0
            wide = len(record.payload) + len(record.extra)
        chars += size_of
        chunk.append(record)
        payload.update(record.payload)
        extra.update(record.extra)
        widest = wide
        if len(chunk) >= size:
            yield from_records(chunk)
            chunk, payload, extra, widest, chars = [], set(), set(), 0, 0
    if chunk:
        yield from_records(chunk)


def _chars(record: UsageRecord) -> int:
    """The characters of a record's texts (its fields' and its top-level values'; nested
    values, bounded by the element's own bound, are not counted)."""
    chars = 0
    for text in (record.identifier, record.event_name, record.error_message, record.malformed):
        if type(text) is str:
            chars += len(text)
    for mapping in (record.payload, record.extra):
        for value in mapping.values():
            if type(value) is str:
                chars += len(value)
    return chars


def _new_keys(mapping: Mapping[str, object], seen: set[str]) -> int:
    return 0 if seen.issuperset(mapping) else len(mapping.keys() - seen)


def cell_spans(groups: npt.NDArray[np.int64], keys: Sequence[frozenset[str]]) -> list[range]:
    """Consecutive rows, as few spans as `MAX_BATCH_CELLS` and `MAX_BATCH_KEYS` allow (a row
    of more keys alone): `groups` gives each row's keys as its place in `keys`."""
    widest = max(map(len, keys), default=0)
    if not _past_bounds(len(groups), len(frozenset().union(*keys)), widest):
        return [range(len(groups))]
    spans, start = [], 0
    seen: set[int] = set()
    held: set[str] = set()
    widest = 0
    for row, group in enumerate(groups.tolist()):
        new = 0 if group in seen else len(keys[group] - held)
        wide = max(widest, len(keys[group]))
        if row > start and _past_bounds(row - start + 1, len(held) + new, wide):
            spans.append(range(start, row))
            start, seen, held, wide = row, set(), set(), len(keys[group])
        if group not in seen:
            seen.add(group)
            held |= keys[group]
        widest = wide
    spans.append(range(start, len(groups)))
    return spans
