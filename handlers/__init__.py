"""One module per Stripe event type, and the explicit registry mapping type -> handler.

A handler receives the full event as plain dicts (thin events are fetched by the worker
first) and a `HandlerContext`, and returns an `Outcome`. Types not listed here are stored
by the webhook as `ignored` and never fetched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from handlers import data_management_import_set_failed as import_set_failed
from handlers import data_management_import_set_succeeded as import_set_succeeded
from handlers import v1_billing_meter_error_report_triggered as error_report_triggered
from handlers import v1_billing_meter_no_meter_found as no_meter_found
from handlers.context import HandlerContext
from handlers.records import Outcome

Handler = Callable[[Mapping[str, Any], HandlerContext], Outcome]

REGISTRY: dict[str, Handler] = {
    error_report_triggered.EVENT_TYPE: error_report_triggered.handle,
    no_meter_found.EVENT_TYPE: no_meter_found.handle,
    import_set_failed.EVENT_TYPE: import_set_failed.handle,
    import_set_succeeded.EVENT_TYPE: import_set_succeeded.handle,
}


def handler_for(event_type: str) -> Handler | None:
    return REGISTRY.get(event_type)
