"""The validation-window flush: queued invalid meter events become v2 error-report events."""

from __future__ import annotations

from collections import defaultdict

from sandbox.events import ErrorSample, build_error_report_event, build_no_meter_found_event
from sandbox.objects import JSON
from sandbox.state import PendingError, SandboxState


def build_reports(state: SandboxState) -> list[JSON]:
    """Drain the queue: one `error_report_triggered` per meter, one `no_meter_found` for all
    unknown event names. Every queued error is a sample (Stripe samples; the sandbox keeps all)."""
    with state.lock:
        pending, state.pending_errors = state.pending_errors, []
    by_meter: dict[str | None, list[PendingError]] = defaultdict(list)
    for item in pending:
        by_meter[item.meter_id].append(item)
    events = []
    for meter_id, items in by_meter.items():
        samples: list[ErrorSample] = [(i.code, i.message, i.identifier) for i in items]
        if meter_id is None:
            events.append(build_no_meter_found_event(samples))
        else:
            events.append(build_error_report_event(meter_id, samples))
    return events
