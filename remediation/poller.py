"""One usage file's rows turned into meter-event batches plus failed rows (the poller's
domain part: validation against the meters, identifiers for rows without one, the row index).

The names of rows without an identifier: `rownames`.
Which objects a pass takes is the poller's own policy: `service/poller/planning.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from remediation.core.checks import problem_ids
from remediation.core.column import Mask
from remediation.core.columns import Batch, Column
from remediation.engine import batches
from remediation.fieldvalues import rfc3339
from remediation.records import UsageRecord
from remediation.rowdigest import batch_digests, sent_array, sent_texts
from remediation.rownames import RowNames, identified, timestamps_of, unnamed_rows
from remediation.validation import MeterIndex, validate_record

BATCH_SIZE = 100  # the v2 meter event stream takes at most 100 events per request
CHECK_ROWS = 4096  # rows validated together
# A CSV object read this much at a time (a batch is at most one block: 4,096 rows of 128
# bytes). In the remediation's 1.875 MB blocks the poller's bench (1M rows) peaked at 115 MB
# against 84 MB reading records; 512 KB: 93 MB at the same speed (331,636-386,292 rows/s,
# alternating); 256 KB: 88 MB, 316,000-329,000 rows/s.
BLOCK_BYTES = 1 << 19
# Rows not sent (failed, or no meter) a chunk holds before they are handed on in a chunk of
# their own: a file of no valid row held them all (1.2M one-cell rows: 1.6 GB).
UNSENT_ROWS = 1024


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
    # (first row, last row) of the rows met while it was filled: a batch's cut, whatever
    # unsent rows were handed on before it (`import_chunks`); None: no row met
    span: tuple[int, int] | None = None
    skipped: int = 0  # rows an earlier pass sent, left out (`import_chunks`' `sent_before`)
    elsewhere: int = 0  # rows sent before, by another object version or as meterfix's
    # correction, left out (`sent_elsewhere`)


class RowUnaccounted(RuntimeError):
    """A row the checks neither turned into an event nor failed: the import stops rather
    than drop it (the object is retried, then given up with an alert)."""


def import_chunks(
    records: Iterable[UsageRecord],
    meters: MeterIndex,
    *,
    now: int,
    names: RowNames,
    batch_size: int = BATCH_SIZE,
    sent_before: Callable[[Batch], Mask] | None = None,
    sent_elsewhere: Callable[[list[str], Batch], set[str]] | None = None,
) -> Generator[ImportChunk, None, None]:
    """Validate the records on the remediation core, a batch of columns at a time (a CSV read
    as columns, JSON matched to its layouts: `engine.batches`); yield a chunk every
    `batch_size` valid events and at the end. `sent_before`: which of a batch's rows (their
    numbers and identifiers) an earlier pass already sent (left out, counted in
    `ImportChunk.skipped`). `sent_elsewhere`:
    which of a batch's identifiers (given with the batch, whose rows it may read) were sent
    before, by another object version or as meterfix's correction (left out before they are
    checked, so neither sent again nor handed to remediation as failed rows; counted in
    `ImportChunk.elsewhere`).

    Before, every row was a record read by `csv.reader`, turned back into columns for the
    checks and into an event one call at a time: 95,000-97,000 rows/s (`bench/poller.py`,
    2026-12-02), under the 100,000 target on that machine."""
    chunk = ImportChunk()
    for batch in batches(records, CHECK_ROWS, block_bytes=BLOCK_BYTES):
        unnamed = batch.rows[unnamed_rows(batch)]  # their numbers
        batch = identified(batch, names)  # every row counted: skipped rows name rows alike
        batch = _not_sent(batch, chunk, sent_before, sent_elsewhere)
        if not len(batch):
            continue
        named = np.isin(batch.rows, unnamed) if len(unnamed) else None
        checked = _Checked(batch, meters, now, named)
        for i, number in enumerate(batch.rows.tolist()):
            event = checked.event(i)
            if event is not None:
                chunk.events.append(event)
            elif (failed := checked.failed.get(i)) is not None:
                chunk.failed.append(failed)
            else:  # conservation: every row is sent or handed to remediation, none dropped
                raise RowUnaccounted(f"row {number} is neither sent nor failed")
            chunk.rows.append(checked.row_ref(i, number, sent=event is not None))
            chunk.span = (chunk.span[0] if chunk.span else number, number)
            if len(chunk.events) >= batch_size:
                yield chunk
                chunk = ImportChunk()
            elif len(chunk.rows) - len(chunk.events) >= UNSENT_ROWS:
                yield _unsent_rows(chunk)
    if chunk.events or chunk.rows or chunk.skipped or chunk.elsewhere:
        yield chunk


def _unsent_rows(chunk: ImportChunk) -> ImportChunk:
    """The chunk's rows not sent (and its failed rows), taken out of it into a chunk of their
    own (no events, so no batch): `chunk` keeps its events, their rows and its span."""
    unsent = ImportChunk(rows=[ref for ref in chunk.rows if not ref.sent], failed=chunk.failed)
    chunk.rows = [ref for ref in chunk.rows if ref.sent]
    chunk.failed = []
    return unsent


def _not_sent(
    batch: Batch,
    chunk: ImportChunk,
    sent_before: Callable[[Batch], Mask] | None,
    sent_elsewhere: Callable[[list[str], Batch], set[str]] | None,
) -> Batch:
    """The rows of `batch` neither an earlier pass sent (counted in `chunk.skipped`) nor, when
    any is left, another object version or meterfix's correction (`chunk.elsewhere`)."""
    if sent_before is not None:
        done = sent_before(batch)
        if done.any():
            chunk.skipped += int(np.count_nonzero(done))
            batch = batch.take(np.flatnonzero(~done))
    if len(batch) and sent_elsewhere is not None:
        batch, chunk.elsewhere = _not_sent_elsewhere(batch, sent_elsewhere, chunk.elsewhere)
    return batch


def _not_sent_elsewhere(
    batch: Batch, sent_elsewhere: Callable[[list[str], Batch], set[str]], count: int
) -> tuple[Batch, int]:
    """The batch without the rows `sent_elsewhere` names, and `count` plus how many those
    were."""
    identifiers = [str(v) for v in batch.identifier.values()]
    sent = sent_elsewhere(identifiers, batch)
    if not sent:
        return batch, count
    keep = np.fromiter((i not in sent for i in identifiers), bool, len(identifiers))
    return batch.take(np.flatnonzero(keep)), count + len(identifiers) - int(keep.sum())


class _Checked:
    """One batch checked: each row's problem (worded by the row check for the few rows that
    fail), identifier, event name, timestamp, and the event of each valid row."""

    def __init__(
        self, batch: Batch, meters: MeterIndex, now: int, named: Mask | None = None
    ) -> None:
        self.failed: dict[int, UsageRecord] = {}
        # Checked as the rows came: a name the poller gave a row without an identifier
        # (`rownames`, 39 characters) is no field of the file, and held to a lowered
        # `max_identifier_chars` it refused every such row (never billed)
        seen = batch if named is None else _without_names(batch, named)
        odd = np.flatnonzero(problem_ids(seen, meters, now))
        taken = zip(batch.take(odd).records(), seen.take(odd).records(), strict=True)
        for i, (record, came) in zip(odd.tolist(), taken, strict=True):
            problem = validate_record(came, meters, now)
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

    def row_ref(self, i: int, number: int, *, sent: bool) -> RowRef:
        return RowRef(
            self.identifiers[i],
            number,
            self.event_names[i],
            self.timestamps[i],
            sent,
            self.contents[i],
        )

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


def _without_names(batch: Batch, named: Mask) -> Batch:
    """`batch` with the identifiers of its `named` rows taken away again (as they came)."""
    values = batch.identifier.values()
    for i in np.flatnonzero(named).tolist():
        values[i] = None
    return batch.with_fields(identifier=Column.of(values))


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


def index_chunks(
    records: Iterable[UsageRecord],
    *,
    size: int = 1000,
    seconds: Callable[[Column], list[int | None]] | None = None,
) -> Iterator[list[RowRef]]:
    """Index mode: identified rows only (rows without one get an identifier from Stripe's own
    connector that we cannot know, so they cannot be traced); read a batch of columns at a
    time, as `import_chunks` reads. `seconds`: each row's `RowRef.timestamp` read from its
    timestamp cells (else `timestamps_of`; the rows' digests read them so whatever it is)."""
    rows: list[RowRef] = []
    for batch in batches(records, CHECK_ROWS, block_bytes=BLOCK_BYTES):
        names: list[str | None] = batch.event_name.values()  # type: ignore[assignment]
        numbers, timestamps = batch.rows.tolist(), timestamps_of(batch.timestamp)
        sent = {key: sent_array(column) for key, column in batch.payload.items()}
        contents = batch_digests(batch, timestamps, sent).tolist()
        stamps = timestamps if seconds is None else seconds(batch.timestamp)
        found = zip(batch.identifier.values(), numbers, names, stamps, contents, strict=True)
        for identifier, number, name, ts, content in found:
            if identifier:
                rows.append(RowRef(str(identifier), number, name, ts, False, content))
                if len(rows) >= size:
                    yield rows
                    rows = []
    if rows:
        yield rows
