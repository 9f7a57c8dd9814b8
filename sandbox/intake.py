"""Where every meter event enters (v1 API, v2 stream, S3 connector): dedupe, validate, keep."""

from __future__ import annotations

from enum import StrEnum

from sandbox.clock import now
from sandbox.state import PendingError, SandboxState
from sandbox.validation import MeterEventInput, Rejection, validate

DEDUPE_WINDOW_SECONDS = 24 * 3600


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


def submit(
    state: SandboxState, event: MeterEventInput, *, source: str, report: bool = True
) -> tuple[Outcome, Rejection | None]:
    """Accept, reject or drop one event. Rejections are queued for the next report flush
    when `report` is true (the connector reports rows in its failed-records file instead)."""
    received_at = now()
    with state.lock:
        if _is_duplicate(state, event.identifier, received_at):
            state.duplicates.append(_record(event, source, received_at))
            return Outcome.DUPLICATE, None
        rejection = validate(state, event, received_at)
        if rejection is not None:
            if report:
                queue_rejection(state, event, rejection)
            return Outcome.REJECTED, rejection
        state.identifiers[event.identifier] = received_at
        state.meter_events.append(_record(event, source, received_at))
    return Outcome.ACCEPTED, None


def _is_duplicate(state: SandboxState, identifier: str, at: float) -> bool:
    seen_at = state.identifiers.get(identifier)
    return seen_at is not None and at - seen_at < DEDUPE_WINDOW_SECONDS


def queue_rejection(state: SandboxState, event: MeterEventInput, rejection: Rejection) -> None:
    """Queue one rejected event for the next validation-window flush (`flush_reports`)."""
    pending = PendingError(
        code=rejection.code,
        message=rejection.message,
        identifier=event.identifier,
        event_name=event.event_name,
        meter_id=rejection.meter_id,
    )
    with state.lock:
        state.pending_errors.append(pending)


def _record(event: MeterEventInput, source: str, received_at: float) -> dict[str, object]:
    return {
        "event_name": event.event_name,
        "identifier": event.identifier,
        "payload": dict(event.payload),
        "timestamp": event.timestamp if event.timestamp is not None else int(received_at),
        "received_at": received_at,
        "source": source,
    }
