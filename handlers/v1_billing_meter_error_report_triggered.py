"""`v1.billing.meter.error_report_triggered` (thin event).

Stripe sends it when meter events sent for a meter failed asynchronous validation
(e.g. unknown customer, bad value, timestamp out of range), at most about once per
validation window, with counts per error code and a few sample errors. The thin payload
points at the meter (`related_object`); the worker fetches the full event before calling us.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers.context import HandlerContext
from handlers.meter_error_reports import handle_report
from handlers.records import Outcome

EVENT_TYPE = "v1.billing.meter.error_report_triggered"


def handle(event: Mapping[str, Any], ctx: HandlerContext) -> Outcome:
    return handle_report(event, ctx)
