"""The validation-window flush: queued invalid meter events become v2 error-report events.

Stripe reports every error in `error_count` but names only a few rows in `sample_errors`
(the number is not documented). The sandbox keeps the first `SAMPLES_PER_CODE` of
each code per event, so a consumer that only fixes the samples misses the other rows.
"""

from __future__ import annotations

from collections import defaultdict

from sandbox.events import ErrorSample, build_error_report_event, build_no_meter_found_event
from sandbox.objects import JSON
from sandbox.state import PendingError, SandboxState

SAMPLES_PER_CODE = 3  # assumed: Stripe says "sample", not how many


def build_reports(state: SandboxState) -> list[JSON]:
    """Drain the queue: one `error_report_triggered` per meter, one `no_meter_found` for all
    unknown event names."""
    with state.lock:
        pending, state.pending_errors = state.pending_errors, []
    by_meter: dict[str | None, list[PendingError]] = defaultdict(list)
    for item in pending:
        by_meter[item.meter_id].append(item)
    events = []
    for meter_id, items in by_meter.items():
        samples: list[ErrorSample] = [(i.code, i.message, i.identifier) for i in items]
        if meter_id is None:
            event = build_no_meter_found_event(samples)
        else:
            event = build_error_report_event(meter_id, samples)
        events.append(_sampled(event))
    return events


def _sampled(event: JSON) -> JSON:
    """Keep the full counts, trim each code's `sample_errors` to `SAMPLES_PER_CODE`."""
    for error_type in event["data"]["reason"]["error_types"]:
        error_type["sample_errors"] = error_type["sample_errors"][:SAMPLES_PER_CODE]
    return event
