"""Sample events for `meterfix trigger`, created in a running sandbox through its admin API."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sandbox.client import SandboxAdmin
from sandbox.clock import new_id, now
from sandbox.connector import SOURCE_PURPOSE
from sandbox.events import (
    ERROR_REPORT_TRIGGERED,
    IMPORT_SET_FAILED,
    IMPORT_SET_SUCCEEDED,
    NO_METER_FOUND,
    build_error_report_event,
    build_import_set_event,
    build_no_meter_found_event,
)
from sandbox.objects import JSON
from sandbox.usage_files import WholeFileFailure, parse_usage_file

TRIGGER_METER = "api_requests"


def resolve_event_type(name: str) -> str:
    """A full type, or any unambiguous suffix (`no_meter_found`, `import_set.failed`)."""
    matches = [t for t in TRIGGERS if t == name or t.endswith("." + name)]
    if len(matches) != 1:
        known = ", ".join(TRIGGERS)
        raise ValueError(f"unknown event type {name!r} (known: {known})")
    return matches[0]


def create_sample_event(admin: SandboxAdmin, event_type: str) -> JSON:
    """Store a sample event of `event_type` in the sandbox and return it."""
    return admin.add_event(TRIGGERS[resolve_event_type(event_type)](admin))


def _meter(admin: SandboxAdmin) -> JSON:
    active = [m for m in admin.meters() if m["status"] == "active"]
    named = [m for m in active if m["event_name"] == TRIGGER_METER]
    return (named or active or [admin.create_meter(TRIGGER_METER)])[0]


def _error_report(admin: SandboxAdmin) -> JSON:
    meter = _meter(admin)
    key = meter["customer_mapping"]["event_payload_key"]
    message = f"Customer mapping key {key} not found in payload."
    return build_error_report_event(
        meter["id"], [("meter_event_no_customer_defined", message, str(uuid.uuid4()))]
    )


def _no_meter(admin: SandboxAdmin) -> JSON:
    name = str(uuid.uuid4())
    message = f"No meter was found matching event_name {name}."
    return build_no_meter_found_event([("no_meter", message, str(uuid.uuid4()))])


def _import_set_succeeded(admin: SandboxAdmin) -> JSON:
    meter = _meter(admin)
    value_key = meter["value_settings"]["event_payload_key"]
    customer_key = meter["customer_mapping"]["event_payload_key"]
    header = f"identifier,timestamp,event_name,payload_{customer_key},payload_{value_key}"
    # format problems, the only kind Stripe's S3 guide puts in a failed-records file
    rows = [
        f"{uuid.uuid4()},{int(now())},{meter['event_name']},,5,meter_event_no_customer_defined,"
        f"Customer mapping key {customer_key} not found in payload.",
        f"{uuid.uuid4()},{int(now())},{meter['event_name']},cus_demo_bob,12 units,"
        f"meter_event_invalid_value,Value '12 units' for key {value_key} is not a valid number.",
    ]
    content = "\n".join([f"{header},error_code,error_message", *rows]) + "\n"
    failed = admin.upload_file(content, "usage.failed_records.csv")
    return build_import_set_event("succeeded", _import_set("succeeded_with_errors", failed["id"]))


def _import_set_failed(admin: SandboxAdmin) -> JSON:
    """A file Stripe's importer fails whole, uploaded with the Files API and named by the
    import set's `file`, so meterfix repairs it from that copy. No bucket object: the
    bundled poller would import it too."""
    name = f"trigger-{int(now())}.csv"
    content = _semicolon_usage_file(_meter(admin)).encode()
    source = admin.upload_file(content, name, SOURCE_PURPOSE)
    failure = _whole_file_failure(name, content)
    import_set = _import_set("failed", None)
    import_set.update(file=source["id"], source_object=None, failed_reason=failure.message)
    import_set["failed_reason_code"] = str(failure.reason)  # as the sandbox's connector says
    return build_import_set_event("failed", import_set)


def _whole_file_failure(name: str, content: bytes) -> WholeFileFailure:
    try:
        parse_usage_file(name, content)
    except WholeFileFailure as failure:
        return failure
    raise AssertionError(f"the sample {name} was meant to fail whole and did not")


def _semicolon_usage_file(meter: JSON) -> str:
    """Good rows (one timestamp in milliseconds) in a `;`-delimited CSV: Stripe reads one
    column named `identifier;timestamp;...`, no `event_name`, and fails the file."""
    value_key = meter["value_settings"]["event_payload_key"]
    customer_key = meter["customer_mapping"]["event_payload_key"]
    batch, at = uuid.uuid4().hex[:8], int(now()) - 60
    lines = [
        f"identifier;timestamp;event_name;payload_{customer_key};payload_{value_key}",
        f"trigger-{batch}-1;{at};{meter['event_name']};cus_demo_alice;5",
        f"trigger-{batch}-2;{at * 1000};{meter['event_name']};cus_demo_bob;12",
        f"trigger-{batch}-3;{at};{meter['event_name']};cus_demo_bob;3",
    ]
    return "\n".join(lines) + "\n"


def _import_set(status: str, errors_file: str | None) -> JSON:
    failed_rows = 2 if errors_file else 0
    return {
        "id": new_id("impset_test"),
        "object": "data_management.import_set",
        "created": int(now()),
        "livemode": False,
        "file": None,
        "source_object": "usage/trigger-sample.csv",
        "status": status,
        "failed_reason": None,
        "result": {
            "rows_processed": 10 if errors_file else 0,
            "objects_created": 10 - failed_rows if errors_file else 0,
            "successes": {"row_count": 10 - failed_rows if errors_file else 0},
            "errors": {"file": errors_file, "row_count": failed_rows},
            "skipped_by_filter": {"row_count": 0},
            "skipped_duplicates": {"row_count": 0},
        },
    }


TRIGGERS: dict[str, Callable[[SandboxAdmin], JSON]] = {
    ERROR_REPORT_TRIGGERED: _error_report,
    NO_METER_FOUND: _no_meter,
    IMPORT_SET_SUCCEEDED: _import_set_succeeded,
    IMPORT_SET_FAILED: _import_set_failed,
}
