"""The input as batches of columns: a CSV read in blocks, JSON Lines and JSON array elements
matched to their layouts, other records in chunks, each next batch made on a thread when asked.

Apart from the run (`engine`) because the poller and the error reports read files the same way
without remediating them; the batch sizes read here are set (and patched by tests and
`bench/batches.py`) on this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from remediation.core.batchbounds import record_batches
from remediation.core.column import Ahead
from remediation.core.columns import Batch
from remediation.core.csvbatch import csv_batch
from remediation.core.jsonarray import json_array_batches
from remediation.core.jsonlread import jsonl_batches
from remediation.jsonrecords import JsonArrayRecords, JsonlRecords
from remediation.readers import CsvRecords
from remediation.records import UsageRecord

BATCH_ROWS = 32768
RECORD_BATCH_ROWS = 4096  # records (a JSON array) are Python objects: fewer at a time
# JSON Lines lines a batch, held as text until matched (`core.jsonlread`). 8,192 against 7,168
# (alternating runs, once the files were written on their own thread, `spool`): 1M `varied`
# rows 6.14 -> 5.85 s, `basic` 5.25 -> 4.53 s, 7 optional keys 10.15 -> 9.68 s; peak RSS +1 to
# +3 MB (136, 128, 134 MB; 4M rows: `varied` 133 -> 139 MB, optional keys 134 -> 138 MB).
# 9,216: 141 MB; 10,240: 143 MB; 14,336: 159 MB (1M `varied`).
JSONL_BATCH_ROWS = 8192
# CSV read at once, 1.875 MB (~14,800 rows): a batch is at most one block. Each batch costs a
# fixed ~10 ms of Python between Arrow's kernels (`bench/batches.py`: 28 % of a 1M-row run in
# 1.25 MB blocks), and each MB of block about 20 MB of peak RSS. Once a block's bytes and table
# were let go before it is used and the audit lines were no longer held three times over,
# alternating runs (1M `varied` rows, medians of 5): 1.25 MB 3.47 s, 123-125 MB; 1.5625 MB
# 2.89 s, 129-131 MB; 1.875 MB 2.57 s, 134-140 MB (`bench/remediate.py`: 4M rows 142 MB, the
# CSV of 27 columns 142 MB, 4M rows 146 MB); 2.5 MB 150 MB, too near the target.
BLOCK_BYTES = 15 << 17


def batches(
    records: Iterable[UsageRecord],
    size: int | None = None,
    ahead: Ahead | None = None,
    block_bytes: int | None = None,
) -> Iterator[Batch]:
    """The input as batches: a CSV's cells as columns (read `block_bytes` at a time, else
    `BLOCK_BYTES`), JSON Lines matched to their layouts (`ahead`: a thread to parse or match
    the next block on), other records in chunks."""
    size = size or BATCH_ROWS
    if isinstance(records, CsvRecords):
        yield from csv_batches(records, size, ahead, block_bytes)
        return
    if isinstance(records, JsonlRecords):
        yield from jsonl_batches(records, min(size, JSONL_BATCH_ROWS), ahead)
        return
    if isinstance(records, JsonArrayRecords):
        rows = min(size, JSONL_BATCH_ROWS)
        yield from json_array_batches(records, rows, min(size, RECORD_BATCH_ROWS), ahead)
        return
    yield from record_batches(records, min(size, RECORD_BATCH_ROWS))


def csv_batches(
    records: CsvRecords, size: int, ahead: Ahead | None = None, block_bytes: int | None = None
) -> Iterator[Batch]:
    """A CSV's blocks as batches of at most `size` rows (slices of a block: no copies); with
    `ahead`, each next batch is read, parsed and built on its thread while this one is used
    (before, only the parse ran there: the file reads, the block's cut and the batch's columns
    took 9 % of the deciding thread; alternating runs, 1M rows, medians of 5: `varied` 4.46 ->
    4.20 s, `basic` 3.40 -> 3.25 s, the deciding thread's CPU 10 % less)."""
    if ahead is not None:
        yield from _prefetched(csv_batches(records, size, block_bytes=block_bytes), ahead)
        return
    reader = records.columns(block_bytes or BLOCK_BYTES)
    if reader.read_header() is None:
        return
    layout = reader.layout
    assert layout is not None
    for block in reader.blocks():
        for start in range(0, block.rows, size):
            rows = min(size, block.rows - start)
            cells = [c.slice(start, rows) for c in block.cells]
            malformed = {
                i - start: reason
                for i, reason in block.malformed.items()
                if start <= i < start + rows
            }
            yield csv_batch(
                layout,
                cells,
                block.first_row + start,
                malformed,
                rows,
                block.widths,
                records.event_name_fill,
            )


def _prefetched(items: Iterator[Batch], ahead: Ahead) -> Iterator[Batch]:
    """`items`, each next one made on `ahead`'s thread while the one before is used."""
    upcoming = ahead(next, items, None)
    while (item := upcoming.result()) is not None:
        upcoming = ahead(next, items, None)
        yield item
        del item
