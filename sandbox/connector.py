"""Stripe's S3 connector, played locally: new bucket objects become import sets.

Assumptions (Stripe does not document them, facts §3/§7): one import set per object; the
import set names its source with `file` (the object, also stored as a sandbox File) and
`source_object` (the bucket key, relative to the bucket prefix); the failed-records file is a
CSV of the original usage columns plus `error_code` and `error_message`.

Which rejected rows go where (facts §7) is the `connector_data_errors` option, see
`DataErrors`. Real Stripe puts only FORMAT problems in the failed-records file and reports
DATA problems (no meter for the event name, archived meter, customer absent or unknown)
asynchronously as thin `v1.billing.meter.*` events with a few sample identifiers. The sandbox
default stays `file` (every rejected row in the failed-records file, as it always did) because
existing end-to-end tests rely on it; tests of the realistic split set `report` explicitly.
A row is never reported twice: either it is in the file or it is queued for the next flush.
"""

from __future__ import annotations

import csv
import io
from enum import StrEnum

from sandbox.bucket import BucketObject, is_usage_key, open_bucket
from sandbox.clock import new_id, now
from sandbox.events import build_import_set_event
from sandbox.intake import Outcome, queue_rejection, submit
from sandbox.objects import JSON
from sandbox.state import SandboxState
from sandbox.usage_files import UsageFile, UsageRow, WholeFileFailure, parse_usage_file
from sandbox.validation import ErrorCode, Rejection

MAX_FILES_PER_POLL = 50
SOURCE_PURPOSE = "data_management_manual_upload"
FAILED_RECORDS_PURPOSE = "data_management_failed_records"  # assumed; the real one is unknown
DATA_ERRORS_OPTION = "connector_data_errors"
DATA_ERROR_CODES = frozenset(
    {
        ErrorCode.NO_METER,
        ErrorCode.ARCHIVED_METER,
        ErrorCode.NO_CUSTOMER_DEFINED,
        ErrorCode.CUSTOMER_NOT_FOUND,
    }
)


class DataErrors(StrEnum):
    """Where the connector sends rows rejected for a DATA problem (`DATA_ERROR_CODES`).

    FILE: into the import set's failed-records file, like format problems (the default).
    REPORT: queued like stream events, reported as thin events on the next `flush_reports()`.
    """

    FILE = "file"
    REPORT = "report"


def set_data_errors(state: SandboxState, mode: DataErrors | str) -> None:
    """Set the `connector_data_errors` option (kept on `state.options`, survives `reset()`).

    Assumption: `SandboxOptions` has no field for it yet, so it is an extra attribute there;
    it is not part of the admin `/_sandbox/config` answer.
    """
    setattr(state.options, DATA_ERRORS_OPTION, DataErrors(mode))


def data_errors(state: SandboxState) -> DataErrors:
    return DataErrors(getattr(state.options, DATA_ERRORS_OPTION, DataErrors.FILE))


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
    failed: list[tuple[UsageRow, Rejection]] = []
    accepted = duplicates = reported = 0
    report_data = data_errors(state) == DataErrors.REPORT
    for row in usage.rows:
        outcome, rejection = submit(state, row.event, source=f"connector:{key}", report=False)
        accepted += outcome == Outcome.ACCEPTED
        duplicates += outcome == Outcome.DUPLICATE
        if rejection is None:
            continue
        if report_data and rejection.code in DATA_ERROR_CODES:
            queue_rejection(state, row.event, rejection)
            reported += 1
        else:
            failed.append((row, rejection))
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


def failed_records_csv(columns: list[str], failed: list[tuple[UsageRow, Rejection]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*columns, "error_code", "error_message"])
    for row, rejection in failed:
        values = [row.columns.get(name, "") for name in columns]
        writer.writerow([*values, str(rejection.code), rejection.message])
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
