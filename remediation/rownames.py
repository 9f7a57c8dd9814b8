"""Names for the rows of one object version that have no identifier (`RowNames`): from the
row's digest and which row alike it is, or from its row number; given alike by the poller's
import and an error report's read of the object, so they are apart from both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.columns import Batch, Column
from remediation.fieldvalues import parse_timestamp
from remediation.records import UsageRecord
from remediation.rowdigest import batch_digests, record_digests, sent_array


def source_tag(key: str, etag: str) -> str:
    """A short stable digest of one object version."""
    return hashlib.sha256(f"{key}\n{etag}".encode()).hexdigest()[:16]


def derived_identifier(tag: str, row_number: int) -> str:
    """For a row without an identifier nor a timestamp: stable per object version and row, so
    re-sending the same file after a crash is deduplicated by Stripe (identifiers are unique
    for ≥ 24 h). Stripe gives such a row the time it arrives: one like it in a new version
    of the object may be new usage, so it is named per version."""
    return f"mfx-{tag}-{row_number}"


def content_identifier(key: str, content: int, occurrence: int) -> str:
    """For a row without an identifier but with a timestamp: the object's key, the row's
    digest (`remediation.rowdigest`: event name, timestamp, payload as sent) and which row of
    the object holding the same it is (1, 2, …, in row order). A new version of the object
    (the day's file rewritten with the rows so far, in any order) names the rows it still
    holds as the old one did, so the poller does not send them again, and a further row
    alike gets the next number: new usage. The digest is part of the name: changing how
    `rowdigest` digests a row would make every such row of a rewritten file new again."""
    return f"{_keyed(key)}{content & _DIGEST_BITS:016x}-{occurrence}"


def _keyed(key: str) -> str:
    return f"mfx-{hashlib.sha256(key.encode()).hexdigest()[:16]}-"


_DIGEST_BITS = (1 << 64) - 1


class RowNames:
    """Identifiers for the rows of one object version that have none, given in row order (the
    poller's import and an error report's read of the object name them alike):
    `content_identifier` for a row with a timestamp, `derived_identifier` for one without."""

    def __init__(self, key: str, etag: str) -> None:
        self.tag = source_tag(key, etag)
        self._keyed = _keyed(key)
        self._alike = RowsAlike()

    def names(
        self, numbers: Sequence[int], stamps: Sequence[int | None], contents: Sequence[int]
    ) -> list[str]:
        """The names of the next rows without an identifier, in row order: their row numbers,
        timestamps (parsed) and digests."""
        timed = np.fromiter((stamp is not None for stamp in stamps), bool, len(stamps))
        digests = np.asarray(contents, np.int64)[timed]
        occurrences = iter(self._alike.occurrences(digests).tolist())
        keyed, tag = self._keyed, self.tag
        return [
            f"{keyed}{content & _DIGEST_BITS:016x}-{next(occurrences)}"  # content_identifier
            if stamp is not None
            else derived_identifier(tag, number)
            for number, stamp, content in zip(numbers, stamps, contents, strict=True)
        ]

    def batch(self, batch: Batch) -> Batch:
        """The next rows of the object as a batch, each without an identifier named (digested
        as columns: the names `records` gives)."""
        return identified(batch, self)

    def records(self, records: Iterable[UsageRecord], size: int = 1000) -> Iterator[UsageRecord]:
        """`records` in their order, each without an identifier named (digested as records
        `size` at a time)."""
        group: list[UsageRecord] = []
        for record in records:
            group.append(record)
            if len(group) >= size:
                yield from self._named(group)
                group = []
        yield from self._named(group)

    def _named(self, group: list[UsageRecord]) -> list[UsageRecord]:
        unnamed = [record for record in group if not record.identifier]
        numbers = [record.row_number for record in unnamed]
        stamps = [parse_timestamp(record.timestamp) for record in unnamed]
        found = self.names(numbers, stamps, record_digests(unnamed))
        for record, name in zip(unnamed, found, strict=True):
            record.identifier = name
        return group


_SLOTS = 1 << 27


class RowsAlike:
    """The digests of the rows named so far, 8 bytes a row (a file may hold tens of millions
    of rows: a dict of them took ~100 bytes a row), as sorted runs, each more than four times
    the length of the next (merged when not): a few runs to look in (5 at 8M rows)."""

    def __init__(self) -> None:
        self._runs: list[npt.NDArray[np.int64]] = []
        # one bit a slot, set for the digests seen (by their low bits): only a digest whose
        # bit is set is looked for in the runs (16 MB, the pages touched only as bits are set)
        self._slots = np.zeros(_SLOTS // 8, np.uint8)

    def occurrences(self, digests: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """For each of the next rows' digests (in row order), which row holding it this is:
        1 for the first ever, 2 for the next, …; the digests are then counted as seen."""
        if not len(digests):
            return np.zeros(0, np.int64)
        order = np.argsort(digests, kind="stable")
        ordered = digests[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        lengths = np.diff(np.r_[starts, len(ordered)])
        ranks = np.arange(len(ordered)) - np.repeat(starts, lengths) + 1
        slots = (ordered & (_SLOTS - 1)).astype(np.int64)
        maybe = np.flatnonzero((self._slots[slots >> 3] >> (slots & 7).astype(np.uint8)) & 1)
        needles = ordered[maybe]  # digests some row may hold already (few, unless many are)
        for run in self._runs:  # needles in order: each search starts near the last one
            at = np.searchsorted(run, needles)
            hit = np.flatnonzero(run[np.minimum(at, len(run) - 1)] == needles)
            if len(hit):  # fewer: rows alike are rare
                found = np.searchsorted(run, needles[hit], "right") - at[hit]
                ranks[maybe[hit]] += found
        np.bitwise_or.at(self._slots, slots >> 3, np.left_shift(1, slots & 7).astype(np.uint8))
        occurrences = np.empty(len(digests), np.int64)
        occurrences[order] = ranks
        self._add(ordered)
        return occurrences

    def _add(self, ordered: npt.NDArray[np.int64]) -> None:
        run = ordered
        while self._runs and len(self._runs[-1]) <= 4 * len(run):
            run = np.sort(np.concatenate([self._runs.pop(), run]), kind="stable")
        self._runs.append(run)


def unnamed_rows(batch: Batch) -> npt.NDArray[np.int64]:
    """The places of the batch's rows without an identifier (empty or absent)."""
    if batch.identifier.kinds is None:  # text: nothing to derive unless a value is empty or absent
        text = batch.identifier.text
        if not pc.any(pc.fill_null(pc.equal(text, ""), True)).as_py():
            return np.zeros(0, np.int64)
    values = batch.identifier.values()
    return np.flatnonzero(np.fromiter((not v for v in values), bool, len(values)))


def identified(batch: Batch, names: RowNames) -> Batch:
    """Rows without an identifier get one from `names` (before the checks, which would find
    it missing), digested as columns."""
    unnamed = unnamed_rows(batch)
    if not len(unnamed):
        return batch
    values = batch.identifier.values()
    rows = batch.take(unnamed)
    stamps = timestamps_of(rows.timestamp)
    sent = {key: sent_array(column) for key, column in rows.payload.items()}
    contents = batch_digests(rows, stamps, sent).tolist()
    for i, name in zip(
        unnamed.tolist(), names.names(rows.rows.tolist(), stamps, contents), strict=True
    ):
        values[i] = name
    return batch.with_fields(identifier=Column.of(values))


def timestamps_of(column: Column) -> list[int | None]:
    """Each row's timestamp as `parse_timestamp` reads it: a text column of plain digits
    (the common case: every row of a usage CSV) in one Arrow cast, anything else row by
    row."""
    if column.kinds is None:
        text = column.text
        plain = pc.match_substring_regex(text, r"^[0-9]{1,18}$")  # within int64
        empty = pc.fill_null(pc.equal(text, ""), True)
        if pc.all(pc.or_(pc.fill_null(plain, False), empty)).as_py():
            stamps: list[int | None] = pc.cast(
                pc.if_else(plain, text, None), pa.int64()
            ).to_pylist()
            return stamps
    return [parse_timestamp(stamp) for stamp in column.values()]
