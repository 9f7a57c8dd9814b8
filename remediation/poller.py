"""One usage file's rows turned into meter-event batches plus failed rows (the poller's
domain part: validation against the meters, identifiers for rows without one, the row index).

Which objects a pass takes is the poller's own policy: `service/poller/planning.py`.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple

from remediation.core.checks import problem_codes
from remediation.core.columns import from_records
from remediation.errors import UnreadableFile, not_utf8
from remediation.readers import CsvLayout, text_stream
from remediation.records import UsageRecord
from remediation.validation import (
    MeterIndex,
    parse_timestamp,
    to_meter_event,
    validate_record,
)

BATCH_SIZE = 100  # the v2 meter event stream takes at most 100 events per request
CHECK_ROWS = 4096  # rows validated together


# --- one file ------------------------------------------------------------------------------


class RowRef(NamedTuple):
    """identifier -> (object, row): what imported_rows records for every identified row."""

    identifier: str
    row_number: int
    event_name: str | None
    timestamp: int | None
    sent: bool


@dataclass(slots=True)
class ImportChunk:
    """Up to BATCH_SIZE valid events (one stream request body's `events`), the rows they came
    from, and the failed rows met on the way (error_code / error_message set)."""

    events: list[dict[str, object]] = field(default_factory=list)
    rows: list[RowRef] = field(default_factory=list)
    failed: list[UsageRecord] = field(default_factory=list)


def source_tag(key: str, etag: str) -> str:
    """A short stable digest of one object version."""
    return hashlib.sha256(f"{key}\n{etag}".encode()).hexdigest()[:16]


def derived_identifier(tag: str, row_number: int) -> str:
    """For a row without an identifier: stable per object version and row, so re-sending the
    same file after a crash is deduplicated by Stripe (identifiers are unique for ≥ 24 h)."""
    return f"mfx-{tag}-{row_number}"


def import_chunks(
    records: Iterable[UsageRecord],
    meters: MeterIndex,
    *,
    now: int,
    tag: str,
    batch_size: int = BATCH_SIZE,
) -> Iterator[ImportChunk]:
    """Validate the records (in batches, on the remediation core's checks); yield a chunk every
    `batch_size` valid events and at the end."""
    chunk = ImportChunk()
    for record, code in _checked(records, meters, now, tag):
        # the reason is worded (by the row check) only for the few rows that fail
        problem = validate_record(record, meters, now) if code is not None else None
        meter = meters.get(record.event_name) if problem is None else None
        sent = meter is not None
        ts = parse_timestamp(record.timestamp)  # once for the event and the row reference
        if meter is not None:
            chunk.events.append(to_meter_event(record, meter, ts))
        elif problem is not None:
            record.error_code, record.error_message = problem.code, problem.message
            chunk.failed.append(record)
        chunk.rows.append(_row_ref(record, sent, ts))
        if len(chunk.events) >= batch_size:
            yield chunk
            chunk = ImportChunk()
    if chunk.events or chunk.rows:
        yield chunk


def _checked(
    records: Iterable[UsageRecord], meters: MeterIndex, now: int, tag: str
) -> Iterator[tuple[UsageRecord, str | None]]:
    """Each record (with an identifier) and the code of its first problem (None: valid)."""
    for group in _groups(records, CHECK_ROWS):
        for record in group:
            if not record.identifier:
                record.identifier = derived_identifier(tag, record.row_number)
        codes = problem_codes(from_records(group, ordered=False), meters, now)
        yield from zip(group, codes.tolist(), strict=True)


def _groups(records: Iterable[UsageRecord], size: int) -> Iterator[list[UsageRecord]]:
    group: list[UsageRecord] = []
    for record in records:
        group.append(record)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group


def index_chunks(records: Iterable[UsageRecord], *, size: int = 1000) -> Iterator[list[RowRef]]:
    """Index mode: identified rows only (rows without one get an identifier from Stripe's own
    connector that we cannot know, so they cannot be traced)."""
    rows: list[RowRef] = []
    for record in records:
        if record.identifier:
            rows.append(_row_ref(record, False))
            if len(rows) >= size:
                yield rows
                rows = []
    if rows:
        yield rows


def _row_ref(record: UsageRecord, sent: bool, ts: int | None = None) -> RowRef:
    timestamp = parse_timestamp(record.timestamp) if ts is None else ts
    return RowRef(str(record.identifier), record.row_number, record.event_name, timestamp, sent)


def read_csv_with_header(stream: BinaryIO) -> tuple[list[str], Iterator[UsageRecord]]:
    """Like `read_records(stream, CSV)`, but the header is known up front (the failed-records
    file keeps the input's columns). Raises UnreadableFile like the shared reader."""
    text = text_stream(stream)
    try:
        rows = csv.reader(text)
        header = next(rows, None)
    except (UnicodeDecodeError, csv.Error) as exc:
        text.detach()
        raise UnreadableFile(f"unreadable CSV header: {exc}") from exc
    if header is None:
        text.detach()
        return [], iter(())
    layout = CsvLayout.from_header(header)
    return list(layout.header), _csv_rows(layout, rows, text)


def _csv_rows(
    layout: CsvLayout, rows: Iterator[list[str]], text: io.TextIOWrapper
) -> Iterator[UsageRecord]:
    number = 0
    try:
        for row in rows:
            if row:  # a blank line is not a record (as in the shared reader)
                number += 1
                yield layout.record(number, row)
    except UnicodeDecodeError as exc:
        raise not_utf8(text.buffer) from exc
    except csv.Error as exc:
        raise UnreadableFile(f"broken CSV: {exc}") from exc
    finally:
        if not text.closed:  # a reader finished after its stream was closed: nothing to hand back
            text.detach()  # the caller owns (and closes) the binary stream
