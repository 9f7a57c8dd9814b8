"""`v1.billing.meter.no_meter_found` (thin event).

Stripe sends it when meter events named an `event_name` that matches no meter of the
account. There is no meter to point at, so `related_object` is `{}`; the errors (code
`no_meter`) and the samples' identifiers come with the full event, fetched by the worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers.context import HandlerContext
from handlers.meter_error_reports import handle_report
from handlers.records import Outcome

EVENT_TYPE = "v1.billing.meter.no_meter_found"


def handle(event: Mapping[str, Any], ctx: HandlerContext) -> Outcome:
    return handle_report(event, ctx)
