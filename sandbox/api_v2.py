"""Stripe v2 routes (events, meter event sessions and stream) and v1 event retrieval."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from sandbox.clock import new_id, now, rfc3339
from sandbox.errors import StripeApiError, not_found
from sandbox.intake import submit
from sandbox.objects import JSON
from sandbox.runtime import current_sandbox
from sandbox.validation import stream_event

bp = Blueprint("sandbox_v2", __name__)

MAX_STREAM_EVENTS = 100


@bp.get("/v2/core/events/<event_id>")
def retrieve_v2_event(event_id: str) -> Response:
    return jsonify(_event(event_id, "v2.core.event"))


@bp.get("/v1/events/<event_id>")
def retrieve_v1_event(event_id: str) -> Response:
    return jsonify(_event(event_id, "event"))


def _event(event_id: str, kind: str) -> JSON:
    state = current_sandbox().state
    with state.lock:
        event = state.events.get(event_id)
    if event is None or event.get("object") != kind:
        raise not_found("event", event_id)
    return event


@bp.post("/v2/billing/meter_event_session")
def create_meter_event_session() -> Response:
    created = now()
    token = new_id("mes_auth_test", 32)
    state = current_sandbox().state
    expires_at = created + state.options.meter_event_session_seconds
    with state.lock:
        state.sessions[token] = expires_at
    return jsonify(
        {
            "object": "v2.billing.meter_event_session",
            "id": new_id("mes_test"),
            "authentication_token": token,
            "created": rfc3339(created),
            "expires_at": rfc3339(expires_at),
            "livemode": False,
        }
    )


@bp.post("/v2/billing/meter_event_stream")
def create_meter_event_stream() -> Response:
    """Authenticated by the session token (checked in the app's auth hook). Answers `{}`:
    validation is asynchronous, errors arrive later as error-report events."""
    body = request.get_json(silent=True)
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list) or not events:
        raise StripeApiError(400, "events must be a non-empty list.", "parameter_missing", "events")
    if len(events) > MAX_STREAM_EVENTS:
        message = f"At most {MAX_STREAM_EVENTS} events can be sent per request."
        raise StripeApiError(400, message, "parameter_invalid", "events")
    parsed = [stream_event(index, item) for index, item in enumerate(events)]
    state = current_sandbox().state
    for event in parsed:
        submit(state, event, source="v2.meter_event_stream")
    return jsonify({})
