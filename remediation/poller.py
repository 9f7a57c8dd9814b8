"""The bundled poller's pure parts: which bucket objects a pass takes, and one file's rows
turned into meter-event batches plus failed rows.

Planning mirrors Stripe's S3 connector (as its S3 guide describes it) with one deliberate
difference: an object is new when its (key, ETag) pair was not seen before, never by a
LastModified cursor — LastModified has one-second resolution, so a cursor skips objects
written in the same second.
The first sync looks back 90 days; a pass takes at most 50 files or 10 GB; the quarantine
prefix and `.meta.json` sidecars are never read; only `.csv`, `.json` and `.jsonl` are usage
files. Corrected files are imported like any other.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import BinaryIO, NamedTuple

from remediation.errors import UnreadableFile
from remediation.ports import ObjectInfo
from remediation.readers import CsvLayout, text_stream
from remediation.records import UsageRecord
from remediation.validation import (
    MeterIndex,
    parse_timestamp,
    to_meter_event,
    validate_record,
)

USAGE_SUFFIXES = (".csv", ".json", ".jsonl")
SIDECAR_SUFFIX = ".meta.json"
BATCH_SIZE = 100  # the v2 meter event stream takes at most 100 events per request


@dataclass(frozen=True, slots=True)
class PassLimits:
    max_files: int = 50
    max_bytes: int = 10 * 1024**3
    lookback: timedelta = timedelta(days=90)


@dataclass(slots=True)
class PassPlan:
    """What one pass does: `take` in order; `skip` records as seen without reading; `deferred`
    is left for a later pass (over the file or byte limit)."""

    take: list[ObjectInfo] = field(default_factory=list)
    skip: list[tuple[ObjectInfo, str]] = field(default_factory=list)
    deferred: int = 0


def is_usage_key(key: str, excluded_prefixes: Sequence[str] = ()) -> bool:
    lowered = key.lower()
    if lowered.endswith(SIDECAR_SUFFIX) or not lowered.endswith(USAGE_SUFFIXES):
        return False
    return not any(prefix and key.startswith(prefix) for prefix in excluded_prefixes)


def plan_pass(
    objects: Iterable[ObjectInfo],
    seen: Container[tuple[str, str]],
    *,
    now: datetime,
    first_sync: bool,
    excluded_prefixes: Sequence[str] = (),
    limits: PassLimits = PassLimits(),
) -> PassPlan:
    """Oldest first (ties broken by key), unseen (key, etag) pairs only."""
    plan = PassPlan()
    candidates = [
        obj
        for obj in objects
        if is_usage_key(obj.key, excluded_prefixes) and (obj.key, obj.etag) not in seen
    ]
    candidates.sort(key=lambda obj: (obj.last_modified, obj.key))
    taken_bytes = 0
    for obj in candidates:
        reason = _skip_reason(obj, now, first_sync, limits)
        if reason:
            plan.skip.append((obj, reason))
            continue
        over_bytes = plan.take and taken_bytes + obj.size > limits.max_bytes
        if len(plan.take) >= limits.max_files or over_bytes:
            plan.deferred += 1
            continue
        plan.take.append(obj)
        taken_bytes += obj.size
    return plan


def _skip_reason(obj: ObjectInfo, now: datetime, first_sync: bool, limits: PassLimits) -> str:
    if obj.size == 0:
        return "empty object"
    if first_sync and obj.last_modified < now - limits.lookback:
        return f"modified more than {limits.lookback.days} days before the first sync"
    return ""


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
    """Validate each record; yield a chunk every `batch_size` valid events and at the end."""
    chunk = ImportChunk()
    for record in records:
        if not record.identifier:
            record.identifier = derived_identifier(tag, record.row_number)
        problem = validate_record(record, meters, now)
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
        raise UnreadableFile(f"not UTF-8 text: undecodable byte at offset {exc.start}") from exc
    except csv.Error as exc:
        raise UnreadableFile(f"broken CSV: {exc}") from exc
    finally:
        if not text.closed:  # a reader finished after its stream was closed: nothing to hand back
            text.detach()  # the caller owns (and closes) the binary stream
