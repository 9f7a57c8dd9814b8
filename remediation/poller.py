"""One usage file's rows turned into meter-event batches plus failed rows (the poller's
domain part: validation against the meters, identifiers for rows without one, the row index).

Which objects a pass takes is the poller's own policy: `service/poller/planning.py`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.checks import problem_ids
from remediation.core.column import Mask
from remediation.core.columns import Batch, Column
from remediation.engine import batches
from remediation.records import UsageRecord
from remediation.rowdigest import batch_digests, record_digests, sent_array, sent_texts
from remediation.validation import (
    MeterIndex,
    parse_timestamp,
    rfc3339,
    validate_record,
)

BATCH_SIZE = 100  # the v2 meter event stream takes at most 100 events per request
CHECK_ROWS = 4096  # rows validated together
# A CSV object read this much at a time (a batch is at most one block: 4,096 rows of 128
# bytes). In the remediation's 1.875 MB blocks the poller's bench (1M rows) peaked at 115 MB
# against 84 MB reading records; 512 KB: 93 MB at the same speed (331,636-386,292 rows/s,
# alternating); 256 KB: 88 MB, 316,000-329,000 rows/s.
BLOCK_BYTES = 1 << 19


# --- one file ------------------------------------------------------------------------------


class RowRef(NamedTuple):
    """identifier -> (object, row): what imported_rows records for every identified row
    (`content`: `remediation.rowdigest` of the row as this version holds it)."""

    identifier: str
    row_number: int
    event_name: str | None
    timestamp: int | None
    sent: bool
    content: int | None = None


@dataclass(slots=True)
class ImportChunk:
    """Up to BATCH_SIZE valid events (one stream request body's `events`), the rows they came
    from, and the failed rows met on the way (error_code / error_message set)."""

    events: list[dict[str, object]] = field(default_factory=list)
    rows: list[RowRef] = field(default_factory=list)
    failed: list[UsageRecord] = field(default_factory=list)
    skipped: int = 0  # rows an earlier pass sent, left out (`import_chunks`' `sent_before`)
    elsewhere: int = 0  # rows sent before, by another object version or as meterfix's
    # correction, left out (`sent_elsewhere`)


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
        return _identified(batch, self)

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


def import_chunks(
    records: Iterable[UsageRecord],
    meters: MeterIndex,
    *,
    now: int,
    names: RowNames,
    batch_size: int = BATCH_SIZE,
    sent_before: Callable[[Batch], Mask] | None = None,
    sent_elsewhere: Callable[[list[str]], set[str]] | None = None,
) -> Generator[ImportChunk, None, None]:
    """Validate the records on the remediation core, a batch of columns at a time (a CSV read
    as columns, JSON matched to its layouts: `engine.batches`); yield a chunk every
    `batch_size` valid events and at the end. `sent_before`: which of a batch's rows (their
    numbers and identifiers) an earlier pass already sent (left out, counted in
    `ImportChunk.skipped`). `sent_elsewhere`:
    which of a batch's identifiers were sent before, by another object version or as
    meterfix's correction (left out before they are checked, so neither sent again nor handed
    to remediation as failed rows; counted in `ImportChunk.elsewhere`).

    Before, every row was a record read by `csv.reader`, turned back into columns for the
    checks and into an event one call at a time: 95,000-97,000 rows/s (`bench/poller.py`,
    2026-12-02), under the 100,000 target on that machine."""
    chunk = ImportChunk()
    for batch in batches(records, CHECK_ROWS, block_bytes=BLOCK_BYTES):
        batch = _identified(batch, names)  # every row counted: skipped rows name rows alike
        if sent_before is not None:
            done = sent_before(batch)
            if done.any():
                chunk.skipped += int(np.count_nonzero(done))
                batch = batch.take(np.flatnonzero(~done))
        if not len(batch):
            continue
        if sent_elsewhere is not None:
            batch, chunk.elsewhere = _not_sent_elsewhere(batch, sent_elsewhere, chunk.elsewhere)
            if not len(batch):
                continue
        checked = _Checked(batch, meters, now)
        for i, number in enumerate(batch.rows.tolist()):
            event = checked.event(i)
            if event is not None:
                chunk.events.append(event)
            elif (failed := checked.failed.get(i)) is not None:
                chunk.failed.append(failed)
            chunk.rows.append(
                RowRef(
                    checked.identifiers[i],
                    number,
                    checked.event_names[i],
                    checked.timestamps[i],
                    event is not None,
                    checked.contents[i],
                )
            )
            if len(chunk.events) >= batch_size:
                yield chunk
                chunk = ImportChunk()
    if chunk.events or chunk.rows or chunk.skipped or chunk.elsewhere:
        yield chunk


def _not_sent_elsewhere(
    batch: Batch, sent_elsewhere: Callable[[list[str]], set[str]], count: int
) -> tuple[Batch, int]:
    """The batch without the rows `sent_elsewhere` names, and `count` plus how many those
    were."""
    identifiers = [str(v) for v in batch.identifier.values()]
    sent = sent_elsewhere(identifiers)
    if not sent:
        return batch, count
    keep = np.fromiter((i not in sent for i in identifiers), bool, len(identifiers))
    return batch.take(np.flatnonzero(keep)), count + len(identifiers) - int(keep.sum())


def _identified(batch: Batch, names: RowNames) -> Batch:
    """Rows without an identifier get one from `names` (before the checks, which would find
    it missing), digested as columns."""
    if batch.identifier.kinds is None:  # text: nothing to derive unless a value is empty or absent
        text = batch.identifier.text
        if not pc.any(pc.fill_null(pc.equal(text, ""), True)).as_py():
            return batch
    values = batch.identifier.values()
    unnamed = np.flatnonzero(np.fromiter((not v for v in values), bool, len(values)))
    if not len(unnamed):
        return batch
    rows = batch.take(unnamed)
    stamps = timestamps_of(rows.timestamp)
    sent = {key: sent_array(column) for key, column in rows.payload.items()}
    contents = batch_digests(rows, stamps, sent).tolist()
    for i, name in zip(
        unnamed.tolist(), names.names(rows.rows.tolist(), stamps, contents), strict=True
    ):
        values[i] = name
    return batch.with_fields(identifier=Column.of(values))


class _Checked:
    """One batch checked: each row's problem (worded by the row check for the few rows that
    fail), identifier, event name, timestamp, and the event of each valid row."""

    def __init__(self, batch: Batch, meters: MeterIndex, now: int) -> None:
        self.failed: dict[int, UsageRecord] = {}
        odd = np.flatnonzero(problem_ids(batch, meters, now))
        for i, record in zip(odd.tolist(), batch.take(odd).records(), strict=True):
            problem = validate_record(record, meters, now)
            if problem is None:  # the row check has the last word (sent if it has a meter)
                continue
            record.error_code, record.error_message = problem.code, problem.message
            self.failed[i] = record
        self.identifiers = [str(v) for v in batch.identifier.values()]
        names = batch.event_name.values()
        self.event_names: list[str | None] = names  # type: ignore[assignment]
        self.timestamps = timestamps_of(batch.timestamp)
        by_name = {name: meters.get(name) for name in set(names)}  # type: ignore[arg-type]
        self._meters = [None if i in self.failed else by_name[n] for i, n in enumerate(names)]
        sent = {key: sent_texts(column) for key, column in batch.payload.items()}
        self._payloads = _payloads(batch, sent)
        arrays = {key: sent_array(batch.payload[key], texts) for key, texts in sent.items()}
        self.contents = batch_digests(batch, self.timestamps, arrays).tolist()

    def event(self, i: int) -> dict[str, object] | None:
        """Row `i` as a v2 meter event stream item (`event_name`, `identifier`, `payload` of
        texts, `timestamp` in RFC 3339); None when it is not sent (failed, or no meter)."""
        meter = self._meters[i]
        if meter is None:
            return None
        ts = self.timestamps[i]
        event: dict[str, object] = {"event_name": meter.event_name}
        event["identifier"] = self.identifiers[i]
        event["payload"] = self._payloads[i]
        if ts is not None:
            event["timestamp"] = rfc3339(ts)
        return event


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


def _payloads(batch: Batch, columns: Mapping[str, list[str | None]]) -> list[dict[str, str]]:
    """Each row's payload as a meter event sends it: its keys in the row's order, each value
    as text (`columns`: `rowdigest.sent_texts` of each payload column: a text or an integer as
    it is, a boolean `true`/`false`, a float as its plain number, converted once per column,
    only those whose text is not already the one sent)."""
    keys = list(batch.payload)
    if batch.order is None:  # a CSV: every row's keys in the columns' order
        if not keys:
            return [{} for _ in range(len(batch))]
        rows = zip(*(columns[key] for key in keys), strict=True)
        return [{k: v for k, v in zip(keys, row, strict=True) if v is not None} for row in rows]
    return [
        {key: value for key in order if (value := columns[key][i]) is not None}
        for i, (order, _extra) in enumerate(batch.order)
    ]


def index_chunks(records: Iterable[UsageRecord], *, size: int = 1000) -> Iterator[list[RowRef]]:
    """Index mode: identified rows only (rows without one get an identifier from Stripe's own
    connector that we cannot know, so they cannot be traced); read a batch of columns at a
    time, as `import_chunks` reads."""
    rows: list[RowRef] = []
    for batch in batches(records, CHECK_ROWS, block_bytes=BLOCK_BYTES):
        names: list[str | None] = batch.event_name.values()  # type: ignore[assignment]
        numbers, timestamps = batch.rows.tolist(), timestamps_of(batch.timestamp)
        sent = {key: sent_array(column) for key, column in batch.payload.items()}
        contents = batch_digests(batch, timestamps, sent).tolist()
        found = zip(batch.identifier.values(), numbers, names, timestamps, contents, strict=True)
        for identifier, number, name, ts, content in found:
            if identifier:
                rows.append(RowRef(str(identifier), number, name, ts, False, content))
                if len(rows) >= size:
                    yield rows
                    rows = []
    if rows:
        yield rows
