"""Builders for sample events, shaped like Stripe's examples.

`errors` arguments are lists of `(code, message, identifier)` tuples.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sandbox.clock import new_id, now, rfc3339
from sandbox.objects import JSON

ERROR_REPORT_TRIGGERED = "v1.billing.meter.error_report_triggered"
NO_METER_FOUND = "v1.billing.meter.no_meter_found"
IMPORT_SET_FAILED = "data_management.import_set.failed"
IMPORT_SET_SUCCEEDED = "data_management.import_set.succeeded"
IMPORT_SET_API_VERSION = "2025-09-30.clover"  # assumed: the preview API's version
VALIDATION_WINDOW_SECONDS = 10

ErrorSample = tuple[str, str, str]


def build_error_report_event(
    meter_id: str,
    errors: list[ErrorSample],
    *,
    created: float | None = None,
    livemode: bool = False,
) -> JSON:
    """A full v2 `v1.billing.meter.error_report_triggered` event for one meter."""
    event = _v2_event(ERROR_REPORT_TRIGGERED, errors, created, livemode)
    event["related_object"] = {
        "id": meter_id,
        "type": "billing.meter",
        "url": f"/v1/billing/meters/{meter_id}",
    }
    return event


def build_no_meter_found_event(
    errors: list[ErrorSample], *, created: float | None = None, livemode: bool = False
) -> JSON:
    """A full v2 `v1.billing.meter.no_meter_found` event (`related_object` `{}`, as in the docs)."""
    event = _v2_event(NO_METER_FOUND, errors, created, livemode)
    event["related_object"] = {}
    return event


def build_import_set_event(
    event_type: str, import_set: JSON, *, created: float | None = None
) -> JSON:
    """A v1 snapshot event around an import set; `event_type`: `failed`, `succeeded` or full."""
    if "." not in event_type:
        event_type = f"data_management.import_set.{event_type}"
    return {
        "id": new_id("evt_test"),
        "object": "event",
        "api_version": IMPORT_SET_API_VERSION,
        "created": int(created if created is not None else now()),
        "livemode": bool(import_set.get("livemode", False)),
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": import_set},
    }


def error_types(errors: Iterable[ErrorSample]) -> list[JSON]:
    """Group samples by code, in first-seen order, as `data.reason.error_types`."""
    grouped: dict[str, list[JSON]] = defaultdict(list)
    for code, message, identifier in errors:
        grouped[code].append({"error_message": message, "request": {"identifier": identifier}})
    return [
        {"code": code, "error_count": len(samples), "sample_errors": samples}
        for code, samples in grouped.items()
    ]


def _v2_event(
    event_type: str, errors: list[ErrorSample], created: float | None, livemode: bool
) -> JSON:
    moment = created if created is not None else now()
    count = len(errors)
    noun = "invalid event" if count == 1 else "invalid events"
    verb = "is" if count == 1 else "are"
    return {
        "id": new_id("evt_test", 40),
        "object": "v2.core.event",
        "type": event_type,
        "created": rfc3339(moment),
        "livemode": livemode,
        "context": None,
        "reason": None,
        "changes": None,
        "data": {
            "developer_message_summary": f"There {verb} {count} {noun}",
            "reason": {"error_count": count, "error_types": error_types(errors)},
            "validation_start": rfc3339(int(moment) - VALIDATION_WINDOW_SECONDS),
            # the window ends when the report is made, after every event it counts (cut to
            # the second, it ended before the events of its last second)
            "validation_end": rfc3339(moment),
        },
    }


def normalize_event(event: JSON) -> JSON:
    """Fill what a stored event needs: id, object (from the type) and created."""
    stored = dict(event)
    event_type = str(stored.get("type", ""))
    if "object" not in stored:
        v2 = event_type.startswith("v1.billing.") or event_type.startswith("v2.")
        stored["object"] = "v2.core.event" if v2 else "event"
    v2_event = stored["object"] == "v2.core.event"
    stored.setdefault("id", new_id("evt_test", 40 if v2_event else 24))
    stored.setdefault("created", rfc3339(now()) if v2_event else int(now()))
    stored.setdefault("livemode", False)
    if v2_event:
        stored.setdefault("context", None)
        stored.setdefault("reason", None)
    return stored
