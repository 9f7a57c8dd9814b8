"""The registry mapping each Stripe event type we handle to its function.

A handler receives the full event as plain dicts (thin events are fetched by the worker
first) and a `HandlerContext`, and returns an `Outcome`. Types not listed here are stored
by the webhook as `ignored` and never fetched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from handlers.context import HandlerContext
from handlers.import_sets import handle_import_set
from handlers.meter_error_reports import handle_report
from handlers.records import Outcome

Handler = Callable[[Mapping[str, Any], HandlerContext], Outcome]


class EventType(StrEnum):
    # Thin: meter events failed Stripe's asynchronous validation (unknown customer, bad value,
    # timestamp out of range), at most about once per validation window, with counts per code
    # and sample errors. The payload points at the meter; the worker fetches the full event.
    METER_ERROR_REPORT_TRIGGERED = "v1.billing.meter.error_report_triggered"
    # Thin: meter events named an `event_name` that matches no meter (`related_object` is `{}`);
    # the errors (code `no_meter`) and the samples come with the full event.
    METER_NO_METER_FOUND = "v1.billing.meter.no_meter_found"
    # Snapshot: a whole file imported from the bucket failed (a mandatory column missing, ...);
    # `failed_reason` says why and no record was imported. The import set is inline.
    IMPORT_SET_FAILED = "data_management.import_set.failed"
    # Snapshot: a file was processed; records may still have failed (`succeeded_with_errors`,
    # `result.errors` names the failed-records file, downloaded later through the Files API).
    IMPORT_SET_SUCCEEDED = "data_management.import_set.succeeded"


REGISTRY: dict[str, Handler] = {
    EventType.METER_ERROR_REPORT_TRIGGERED: handle_report,
    EventType.METER_NO_METER_FOUND: handle_report,
    EventType.IMPORT_SET_FAILED: handle_import_set,
    EventType.IMPORT_SET_SUCCEEDED: handle_import_set,
}


def handler_for(event_type: str) -> Handler | None:
    return REGISTRY.get(event_type)
