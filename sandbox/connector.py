"""Stripe's S3 connector, played locally: new bucket objects become import sets.

Which rejected row goes where follows Stripe's S3 guide ("Report and handle errors"):
- FORMAT problems (`format_error`: a record the connector cannot turn into a meter event) go
  to the import set's failed-records file, announced by `data_management.import_set.succeeded`
  with status `succeeded_with_errors`: a mandatory field without a value (the guide's
  examples: `stripe_customer_id`, `event_name`; also the meter's value key), a value that is
  not a number, a timestamp that is not integer unix seconds, an identifier or event name over
  Stripe's 100-character limit.
- DATA problems (a well-formed record whose values Stripe rejects: no meter for the event
  name, an inactive meter, an unknown customer, a timestamp outside [now - 35 days,
  now + 5 min]) become meter events that fail Stripe's asynchronous validation: they are
  queued and reported on the next `flush_reports()` as thin `v1.billing.meter.*` events that
  sample a few identifiers. The import counts them as created: it cannot know they fail later.
A row is never reported twice: either it is in the file or it is queued for the next flush.

Assumptions (Stripe does not document them): one import set per object; the
import set names its source with `file` (the object, also stored as a sandbox File) and
`source_object` (the bucket key, relative to the bucket prefix); the failed-records file is a
CSV of the original usage columns plus `error_code` (a code Stripe documents, empty where it
documents none) and `error_message`. The `connector_data_errors` option `file` (a deviation,
see sandbox/DEVIATIONS.md) puts data problems in the file too.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from enum import StrEnum

from sandbox.bucket import BucketObject, is_usage_key, open_bucket
from sandbox.clock import new_id, now
from sandbox.events import build_import_set_event
from sandbox.intake import Outcome, queue_rejection, submit
from sandbox.objects import DEFAULT_CUSTOMER_KEY, DEFAULT_VALUE_KEY, JSON
from sandbox.state import SandboxState
from sandbox.usage_files import UsageFile, UsageRow, WholeFileFailure, parse_usage_file
from sandbox.validation import (
    MAX_EVENT_NAME_CHARS,
    MAX_IDENTIFIER_CHARS,
    UNIX_SECONDS,
    ErrorCode,
    is_number,
)

MAX_FILES_PER_POLL = 50
SOURCE_PURPOSE = "data_management_manual_upload"
FAILED_RECORDS_PURPOSE = "data_management_failed_records"  # assumed; the real one is unknown
DATA_ERRORS_OPTION = "connector_data_errors"


class DataErrors(StrEnum):
    """Where the connector sends rows rejected for a DATA problem.

    REPORT: as Stripe does, reported as thin events on the next `flush_reports()` (default).
    FILE: into the import set's failed-records file, like format problems (a deviation kept
    for tests that drive the failed-records path with every code, without an index).
    """

    REPORT = "report"
    FILE = "file"


@dataclass(frozen=True)
class FailedRecord:
    """One row of the failed-records file; `code` is "" where Stripe documents no code."""

    row: UsageRow
    code: str
    message: str


def set_data_errors(state: SandboxState, mode: DataErrors | str) -> None:
    """Set the `connector_data_errors` option (kept on `state.options`, survives `reset()`).

    Assumption: `SandboxOptions` has no field for it yet, so it is an extra attribute there;
    it is not part of the admin `/_sandbox/config` answer.
    """
    setattr(state.options, DATA_ERRORS_OPTION, DataErrors(mode))


def data_errors(state: SandboxState) -> DataErrors:
    return DataErrors(getattr(state.options, DATA_ERRORS_OPTION, DataErrors.REPORT))


def format_error(state: SandboxState, row: UsageRow) -> FailedRecord | None:
    """The first format problem of one record (see the module docstring), or None."""
    columns, event = row.columns, row.event
    if not event.event_name:
        return FailedRecord(row, ErrorCode.NO_METER, "Required field event_name has no value.")
    for name, value, limit in (
        ("identifier", event.identifier, MAX_IDENTIFIER_CHARS),
        ("event_name", event.event_name, MAX_EVENT_NAME_CHARS),
    ):
        if len(value) > limit:
            return FailedRecord(row, "", f"Field {name} must be at most {limit} characters.")
    timestamp = columns.get("timestamp", "").strip()
    if timestamp and not UNIX_SECONDS.fullmatch(timestamp):
        message = f"Timestamp {timestamp[:40]!r} is not an integer number of Unix epoch seconds."
        return FailedRecord(row, "", message)
    return _payload_format_error(state, row)


def _payload_format_error(state: SandboxState, row: UsageRow) -> FailedRecord | None:
    """Mandatory payload fields: the meter's keys (the template's defaults without a meter)."""
    meter = state.meter_for_event_name(row.event.event_name)
    customer_key = meter["customer_mapping"]["event_payload_key"] if meter else DEFAULT_CUSTOMER_KEY
    value_key = meter["value_settings"]["event_payload_key"] if meter else DEFAULT_VALUE_KEY
    payload = row.event.payload
    if not payload.get(customer_key):
        message = f"Customer mapping key {customer_key} not found in payload."
        return FailedRecord(row, ErrorCode.NO_CUSTOMER_DEFINED, message)
    value = payload.get(value_key, "")
    if not value:
        message = f"Value key {value_key} not found in payload."
        return FailedRecord(row, ErrorCode.VALUE_NOT_FOUND, message)
    if not is_number(value):
        message = f"Value {value!r} for key {value_key} is not a valid number."
        return FailedRecord(row, ErrorCode.INVALID_VALUE, message)
    return None


def poll_bucket(
    state: SandboxState, bucket_url: str | None, s3_endpoint_url: str | None
) -> list[JSON]:
    """Import every object not seen before (by key + version); returns the snapshot events."""
    if not bucket_url:
        return []
    bucket = open_bucket(bucket_url, s3_endpoint_url)
    events = []
    with state.connector_lock:
        for obj in _new_objects(state, bucket.list_objects()):
            import_set = import_object(state, obj.key, bucket.read(obj.key))
            with state.lock:
                state.connector_seen[obj.key] = obj.version
            kind = "failed" if import_set["status"] == "failed" else "succeeded"
            events.append(build_import_set_event(kind, import_set))
    return events


def _new_objects(state: SandboxState, objects: list[BucketObject]) -> list[BucketObject]:
    with state.lock:
        seen = dict(state.connector_seen)
    fresh = [o for o in objects if is_usage_key(o.key) and seen.get(o.key) != o.version]
    return sorted(fresh, key=lambda o: o.key)[:MAX_FILES_PER_POLL]


def import_object(state: SandboxState, key: str, content: bytes) -> JSON:
    """One import set for one object, stored in state."""
    source = state.add_file(content, key.rsplit("/", 1)[-1], SOURCE_PURPOSE)
    import_set = _import_set(source["id"], key)
    try:
        usage = parse_usage_file(key, content)
    except WholeFileFailure as failure:
        import_set.update(status="failed", failed_reason=failure.message)
        import_set["failed_reason_code"] = str(failure.reason)
    else:
        import_set.update(_import_rows(state, key, usage))
    with state.lock:
        state.import_sets[import_set["id"]] = import_set
    return import_set


def _import_rows(state: SandboxState, key: str, usage: UsageFile) -> JSON:
    failed: list[FailedRecord] = []
    accepted = duplicates = reported = 0
    report_data = data_errors(state) == DataErrors.REPORT
    for row in usage.rows:
        bad_format = format_error(state, row)
        if bad_format is not None:
            failed.append(bad_format)
            continue
        outcome, rejection = submit(state, row.event, source=f"connector:{key}", report=False)
        accepted += outcome == Outcome.ACCEPTED
        duplicates += outcome == Outcome.DUPLICATE
        if rejection is None:
            continue
        if report_data:
            queue_rejection(state, row.event, rejection)
            reported += 1
        else:
            failed.append(FailedRecord(row, rejection.code, rejection.message))
    errors: JSON = {"file": None, "row_count": len(failed)}
    if failed:
        name = key.rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".failed_records.csv"
        errors["file"] = state.add_file(
            failed_records_csv(usage.columns, failed), name, FAILED_RECORDS_PURPOSE
        )["id"]
    return {
        "status": "succeeded_with_errors" if failed else "succeeded",
        # rows reported later were created as meter events: the import cannot know they fail
        "result": _result(len(usage.rows), accepted + reported, errors, duplicates),
    }


def failed_records_csv(columns: list[str], failed: list[FailedRecord]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*columns, "error_code", "error_message"])
    for record in failed:
        values = [record.row.columns.get(name, "") for name in columns]
        writer.writerow([*values, str(record.code), record.message])
    return out.getvalue().encode()


def _import_set(file_id: str, key: str) -> JSON:
    return {
        "id": new_id("impset_test"),
        "object": "data_management.import_set",
        "created": int(now()),
        "livemode": False,
        "file": file_id,
        "source_object": key,
        "status": "pending",
        "failed_reason": None,
        "result": _result(0, 0, {"file": None, "row_count": 0}, 0),
    }


def _result(rows: int, accepted: int, errors: JSON, duplicates: int) -> JSON:
    return {
        "rows_processed": rows,
        "objects_created": accepted,
        "successes": {"row_count": accepted},
        "errors": errors,
        "skipped_by_filter": {"row_count": 0},
        "skipped_duplicates": {"row_count": duplicates},
    }
