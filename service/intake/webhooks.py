"""POST /webhooks: verify, store in the inbox, answer 200 only after the commit.

The route stays thin: reading the body under a size limit, verification
(`service.adapters.stripe_events`) and storage (`service.intake.store`) live elsewhere; the worker
processes what is stored. Everything the route needs from the settings is built once, when
the blueprint is registered on an app (`Intake`), never per request and never at import.
The success path logs at DEBUG only: at webhook rates an INFO line per event costs more than
verifying it, and the inbox row is the record of every accepted event.

Every answer under /webhooks is JSON, errors included (docs/architecture.md, reliability
contract: no request produces a 500 or an HTML page): other methods and paths below
/webhooks are routed to this blueprint too, so its own error handlers answer them, not
Flask's HTML pages.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import IO, Any

from flask import Blueprint, Request, Response, current_app, request
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed, NotFound
from werkzeug.routing import PathConverter, Rule

from handlers import REGISTRY
from service.adapters.stripe_events import VerifiedEvent, WebhookVerifier
from service.errors import InboxUnavailable, SchemaNotCurrent, WebhookRejected
from service.intake.read_deadline import read_deadline
from service.intake.schema_gate import SchemaGate, upgrade_due
from service.intake.store import store_event
from service.logs import LOGGER, log_event
from service.runtime import Runtime, runtime_of

bp = Blueprint("webhooks", __name__)

INTAKE_KEY = "meterfix.webhook_intake"
JSON_MIMETYPE = "application/json"
READ_CHUNK_BYTES = 64 * 1024
# A body not received whole within this many seconds of its first read is refused (408):
# Stripe sends a body at once; a client dripping one byte a second held a server thread for
# as long as it liked (two such clients stopped the Procfile's two sync workers).
BODY_SECONDS = 10.0
# The client's socket, where the server puts it in the WSGI environ (shut for reading at the
# deadline, so that a read blocked on a client sending nothing returns)
_SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")


@dataclass(frozen=True, slots=True)
class Intake:
    """What the route needs, built once per app from its settings."""

    runtime: Runtime
    verifier: WebhookVerifier
    max_body_bytes: int
    schema: SchemaGate


@bp.record_once
def _build_intake(state: BlueprintSetupState) -> None:
    rt = runtime_of(state.app)
    state.app.extensions[INTAKE_KEY] = Intake(
        rt, rt.verifier, rt.settings.mfx_max_body_bytes, SchemaGate()
    )


@bp.post("/webhooks", provide_automatic_options=False)  # OPTIONS answers 405 below
def receive_webhook() -> Response:
    intake: Intake = current_app.extensions[INTAKE_KEY]
    req: Request = request._get_current_object()  # type: ignore[attr-defined]  # proxy once
    try:
        body = read_body(req, intake.max_body_bytes)
        event = intake.verifier.verify(body, req.headers.get("Stripe-Signature"))
    except WebhookRejected as exc:
        log_event("webhook.rejected", level=logging.WARNING, reason=exc.reason, status=exc.status)
        return json_response({"error": exc.reason}, exc.status)
    return _store(intake, event)


OTHER_REQUESTS = "webhooks.other_request"


class _Below(PathConverter):
    """Whatever follows /webhooks/, line breaks included: `path`'s `.` stops at one, and a
    request for /webhooks/0%0A got the app's HTML 404 instead of this room's JSON."""

    regex = "[^/](?s:.*?)"


@bp.record_once
def _route_everything_else_here(state: BlueprintSetupState) -> None:
    """Any other method on /webhooks, any path below it: rules without a method list match
    every method (Flask's `route` always sets one), added after the POST rule, which wins."""
    state.app.url_map.converters["webhooks_below"] = _Below
    for path in ("/webhooks", "/webhooks/", "/webhooks/<webhooks_below:rest>"):
        state.app.url_map.add(Rule(path, endpoint=OTHER_REQUESTS))
    state.app.view_functions[OTHER_REQUESTS] = _other_request


def _other_request(rest: str | None = None) -> Response:
    if rest is None and request.path == "/webhooks":
        raise MethodNotAllowed(valid_methods=["POST"])
    raise NotFound()


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    if isinstance(exc, MethodNotAllowed):
        response = json_response({"error": "method not allowed: POST only"}, 405)
        response.headers["Allow"] = "POST"
        return response
    if isinstance(exc, NotFound):
        return json_response({"error": "not found: events are posted to /webhooks"}, 404)
    code = exc.code or 500
    return json_response({"error": (exc.name or "error").lower()}, code if code >= 400 else 500)


@bp.errorhandler(InternalServerError)
def _internal_error(exc: InternalServerError) -> Response:
    """The last line of defence: a bug answers JSON (Stripe retries a 5xx) and is logged."""
    cause = exc.original_exception or exc
    log_event("webhook.error", level=logging.ERROR, error=type(cause).__name__)
    return json_response({"error": "internal error"}, 500)


def read_body(req: Request, limit: int) -> bytes:
    """The raw body, reading at most limit + 1 bytes; 413 beyond the limit (the
    README: the same JSON shape as a 400, with the limit in the reason).

    With a Content-Length the body is read straight from the server's `wsgi.input` (which
    never yields more than that length) rather than through werkzeug's stream wrapper, built
    per request; a chunked body goes through the wrapper, which finds where it ends."""
    length = req.content_length
    if length is not None and length > limit:
        raise WebhookRejected(f"body too large: over {limit} bytes", status=413)
    client = next((req.environ[k] for k in _SOCKET_KEYS if k in req.environ), None)
    deadline = time.monotonic() + BODY_SECONDS
    with read_deadline(client, BODY_SECONDS):
        if length is None:
            body = _read_at_most(req.stream, limit + 1)
        else:
            body = _read_at_most(req.environ["wsgi.input"], length)
    if time.monotonic() >= deadline and (length is None or len(body) < length):
        raise WebhookRejected(f"body not received within {BODY_SECONDS:g} s", status=408)
    if len(body) > limit:
        raise WebhookRejected(f"body too large: over {limit} bytes", status=413)
    return body


def _read_at_most(stream: IO[bytes], size: int) -> bytes:
    """Up to `size` bytes: a single read may return less than asked before the body ends
    (and every read ends at the body's deadline: `read_deadline`).

    A broken chunked encoding or a body cut short is the sender's fault: servers raise
    OSError for both (werkzeug "Invalid chunk header", gunicorn's InvalidChunkSize and
    NoMoreData), answered as a 400."""
    chunks = []
    try:
        while size > 0:
            chunk = stream.read(min(size, READ_CHUNK_BYTES))
            if not chunk:
                break
            chunks.append(chunk)
            size -= len(chunk)
    except (OSError, ValueError) as exc:
        raise WebhookRejected(f"unreadable body: {type(exc).__name__}") from exc
    return b"".join(chunks)


def _store(intake: Intake, event: VerifiedEvent) -> Response:
    engine = intake.runtime.engine
    try:
        intake.schema.require(engine)
        result = store_event(engine, event, known_type=event.event_type in REGISTRY)
    except SchemaNotCurrent as exc:  # was "database unavailable": the wrong cause to look for
        reason = upgrade_due(exc)
        log_event(
            "webhook.schema_not_current",
            level=logging.ERROR,
            event_id=event.event_id,
            reason=reason,
        )
        return json_response({"error": reason}, 503)
    except InboxUnavailable as exc:  # Stripe retries a 503; the event is not lost
        log_event(
            "webhook.store_failed", level=logging.ERROR, event_id=event.event_id, error=str(exc)
        )
        return json_response({"error": "database unavailable"}, 503)
    if LOGGER.isEnabledFor(logging.DEBUG):  # skip building the line when nobody reads it
        log_event(
            "webhook.received",
            level=logging.DEBUG,
            event_id=event.event_id,
            type=event.event_type,
            result=result.value,
        )
    return json_response({"status": result.value, "id": event.event_id}, 200)


_ENCODE_JSON = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps builds one per call


def json_response(payload: dict[str, Any], status: int) -> Response:
    """A small JSON answer, encoded directly (`jsonify` costs a provider lookup and more)."""
    return Response(_ENCODE_JSON(payload), status, content_type=JSON_MIMETYPE)
