"""Shared reading of `data_management.import_set.*` snapshot events.

The import set is a preview API and its shape is not documented by Stripe. Assumed here
(from Stripe's public examples; `tests/data/events/` holds ours), read liberally:
- `data.object.id` ("impset_..."), `status`, `failed_reason`;
- source file: `file` (a file id, or an expanded file object with `id`), or `source_file`;
- source object in the bucket: `source_object` / `object_key` / `s3_key`, or
  `source.{key,object}` / `source.s3.key` (not confirmed: kept when present);
- `result.errors.file` or `result.errors.file_id` (the failed-records file), with
  `row_count` or `count`; `result.successes.row_count|count`; `result.rows_processed`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from handlers._fields import (
    STATUS_CHARS,
    count,
    first_count,
    first_text,
    is_file_id,
    is_stripe_id,
    kind,
    mapping,
    text,
    unix_time,
)
from handlers.context import HandlerContext
from handlers.errors import UnusableEvent
from handlers.meter_error_reports import IncompleteEvent
from handlers.records import ImportSetRecord, Outcome, OutcomeStatus, RemediationKind


def handle_import_set(event: Mapping[str, Any], ctx: HandlerContext) -> Outcome:
    record = parse_import_set(event)
    status = ctx.record_import_set(record)
    # an event recorded before (its remediation was queued then), or older than the one
    # applied: Stripe does not deliver in order, and an older `failed` after a newer
    # `succeeded` repaired the whole file again, re-sending the rows Stripe had billed
    stale = status is OutcomeStatus.UNCHANGED
    if not stale:
        _require_failed_records_file(record)  # raised, the record is rolled back with it
    kind = None if stale else remediation_kind(record)
    queued = kind is not None and ctx.request_remediation(kind, record.import_set_id)
    errors = f"failed records file {record.errors_file_id}" if record.errors_file_id else "no file"
    summary = f"import set {record.import_set_id} {record.status}, {errors}"
    return Outcome(status, summary + (f", {kind} queued" if queued else ""))


def remediation_kind(record: ImportSetRecord) -> RemediationKind | None:
    """A failed import set: repair the whole file; one with a failed-records file: fix those."""
    if record.status == "failed":
        return RemediationKind.IMPORT_SET_FAILED
    if record.errors_file_id:
        return RemediationKind.IMPORT_SET_ERRORS
    return None


def parse_import_set(event: Mapping[str, Any]) -> ImportSetRecord:
    """The import set an event carries; UnusableEvent (dead-lettered at once, never retried)
    when the event has no import set to read or names files by something that is no id."""
    event_id = text(event.get("id"))
    if event_id is None:
        raise IncompleteEvent("import set event without an event id")
    obj = _import_set(event)
    import_set_id = _import_set_id(obj.get("id"))
    result = mapping(obj.get("result"))
    errors = mapping(result.get("errors"))
    errors_file = _file_id(errors.get("file")) or _file_id(errors.get("file_id"))
    source_file = _file_id(obj.get("file")) or _file_id(obj.get("source_file"))
    return ImportSetRecord(
        import_set_id=import_set_id,
        event_id=event_id,
        event_type=str(event.get("type", "")),
        event_created=_created(event.get("created")),
        status=text(obj.get("status"), STATUS_CHARS) or "unknown",
        failed_reason=_reason(obj.get("failed_reason")),
        source_file_id=_checked_file_id(source_file, "data.object.file"),
        source_object=_source_object(obj),
        errors_file_id=_checked_file_id(errors_file, "data.object.result.errors.file"),
        errors_row_count=first_count(errors, "row_count", "count"),
        successes_row_count=first_count(mapping(result.get("successes")), "row_count", "count"),
        rows_processed=count(result.get("rows_processed")),
        detail={"livemode": bool(event.get("livemode", False)), "result": dict(result)},
    )


# How far ahead of our clock an event's `created` is still taken as its time (clocks differ)
CREATED_AHEAD_SECONDS = 86_400


def _created(value: object) -> int | None:
    """The event's time, or None when it is none to trust: `created` in the year 2100 made
    every later event of the import set "older" (not applied, its failed records never
    remediated, nothing said), and would have been a run's reference time (every row too
    old). None: the time it was received stands in, and it orders no other event."""
    created = unix_time(value)
    if created is None or created > time.time() + CREATED_AHEAD_SECONDS:
        return None
    return created


def _require_failed_records_file(record: ImportSetRecord) -> None:
    """Stripe says records failed (`succeeded_with_errors`, a count of errors) but names
    no file of them: recorded, it read as nothing to remediate (and its rows as taken, when
    another version of the object is remediated), the rows never billed, nobody told."""
    if record.errors_file_id or record.status == "failed":
        return
    failed = record.errors_row_count
    if record.status != "succeeded_with_errors" and not failed:
        return
    counted = f"{failed} failed record(s)" if failed else "failed records"
    raise UnusableEvent(
        f"import set event: {record.import_set_id} is {record.status} with {counted} but "
        "names no failed-records file (data.object.result.errors.file)"
    )


def _import_set(event: Mapping[str, Any]) -> Mapping[str, Any]:
    data = event.get("data")
    if not isinstance(data, Mapping):
        raise UnusableEvent(f"import set event: data is {kind(data)}, not an object")
    obj = data.get("object")
    if not isinstance(obj, Mapping):
        raise UnusableEvent(f"import set event: data.object is {kind(obj)}, not an object")
    return obj


def _import_set_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise UnusableEvent("import set event: data.object has no id")
    if not is_stripe_id(value):
        raise UnusableEvent(f"import set event: data.object.id {value[:40]!r} is not a Stripe id")
    return value


def _checked_file_id(value: str | None, where: str) -> str | None:
    """Files are downloaded by id (the source, the failed records): only an id goes into
    that URL."""
    if value is not None and not is_file_id(value):
        raise UnusableEvent(f"import set event: {where} {value[:40]!r} is not a Stripe file id")
    return value


def _file_id(value: object) -> str | None:
    """As the event spells it (`_checked_file_id` refuses what is no id, NUL and all)."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _reason(value: object) -> str | None:
    if isinstance(value, Mapping):  # tolerate an object form {code, message}
        return first_text(value, "message", "code", "type")
    return text(value)


def _source_object(obj: Mapping[str, Any]) -> str | None:
    direct = first_text(obj, "source_object", "object_key", "s3_key")
    if direct:
        return direct
    source = mapping(obj.get("source"))
    return first_text(source, "key", "object") or text(mapping(source.get("s3")).get("key"))
