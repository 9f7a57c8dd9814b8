"""Stripe's S3 connector, played locally: new bucket objects become import sets.

Assumptions (Stripe does not document them, facts §3/§7): one import set per object; the
import set names its source with `file` (the object, also stored as a sandbox File) and
`source_object` (the bucket key, relative to the bucket prefix); the failed-records file is a
CSV of the original usage columns plus `error_code` and `error_message`. Rows rejected here are
reported only in that file, not again as thin error-report events.
"""

from __future__ import annotations

import csv
import io

from sandbox.bucket import BucketObject, is_usage_key, open_bucket
from sandbox.clock import new_id, now
from sandbox.events import build_import_set_event
from sandbox.intake import Outcome, submit
from sandbox.objects import JSON
from sandbox.state import SandboxState
from sandbox.usage_files import UsageFile, UsageRow, WholeFileFailure, parse_usage_file
from sandbox.validation import Rejection

MAX_FILES_PER_POLL = 50
SOURCE_PURPOSE = "data_management_manual_upload"
FAILED_RECORDS_PURPOSE = "data_management_failed_records"  # assumed; the real one is unknown


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
    accepted = duplicates = 0
    for row in usage.rows:
        outcome, rejection = submit(state, row.event, source=f"connector:{key}", report=False)
        accepted += outcome == Outcome.ACCEPTED
        duplicates += outcome == Outcome.DUPLICATE
        if rejection is not None:
            failed.append((row, rejection))
    errors: JSON = {"file": None, "row_count": len(failed)}
    if failed:
        name = key.rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".failed_records.csv"
        errors["file"] = state.add_file(
            failed_records_csv(usage.columns, failed), name, FAILED_RECORDS_PURPOSE
        )["id"]
    return {
        "status": "succeeded_with_errors" if failed else "succeeded",
        "result": _result(len(usage.rows), accepted, errors, duplicates),
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
