"""Rows a caller leaves out of a run by their identifier (`ports.LeavesOut`: rows billed from
another version of their object, rows another run handled), taken out of each batch as it is
read, on its columns: the run reads CSV, JSON Lines and JSON arrays in columns all the same.
(Leaving them out of a stream of records made the service's import-set runs read every row as
a record: 1M `basic` rows 2.1 s -> 17 s in the remediation stage.) A `ports.SelectsRows` is
handed each batch whole and gives the batch the run takes (an error report's rows)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import islice

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.columns import Batch, Indexes, Kind
from remediation.core.textmeasures import mask
from remediation.ports import LeavesOut, SelectsRows

# Distinct identifiers asked at a time (each chunk is a query's IN list, or several)
CHUNK = 1000


def without(
    batches: Iterator[Batch],
    leave_out: Sequence[LeavesOut],
    taken: Callable[[Batch, Indexes], None] | None = None,
) -> Iterator[Batch]:
    """`batches` without the rows each of `leave_out` excludes, asked in its order (a row one
    leaves out is not shown to the next); a batch left empty is skipped. `taken` is told the
    rows a `SelectsRows` passed over (`sameids.SameIdentifiers.taken`)."""
    if not leave_out:
        yield from batches
        return
    for batch in batches:
        for rows_out in leave_out:
            if isinstance(rows_out, SelectsRows):
                batch = rows_out.selected(batch)
                passed = rows_out.passed_over()
                if taken is not None:
                    taken(*passed)
                del passed  # not held while the next batch is read
            else:
                batch = _without(batch, rows_out)
        if len(batch):
            yield batch


def _without(batch: Batch, rows_out: LeavesOut) -> Batch:
    if not len(batch):
        return batch
    texts, asked = _identifiers(batch)
    if not asked.any():
        return batch
    distinct = pc.unique(texts.filter(pa.array(asked))).to_pylist()
    excluded: set[str] = set()
    chunks = iter(distinct)
    while chunk := set(islice(chunks, CHUNK)):
        excluded |= rows_out.excluded(chunk)
    if not excluded:
        return batch
    out = asked & mask(pc.is_in(texts, value_set=pa.array(sorted(excluded), pa.string())))
    rows_out.count_left(int(out.sum()))
    return batch.take(np.flatnonzero(~out))


def _identifiers(batch: Batch) -> tuple[pa.Array, np.ndarray]:
    """The identifier column's texts, and the rows whose identifier a lookup may find: text
    (not a JSON number), not empty, holding no NUL (PostgreSQL refuses it as a parameter)."""
    column = batch.identifier
    texts = column.text
    asked = column.present() & mask(pc.greater(pc.utf8_length(texts), 0))
    if column.kinds is not None:
        asked &= column.kinds == Kind.TEXT
    nul = mask(pc.match_substring(texts, "\x00"))
    return texts, asked & ~nul
