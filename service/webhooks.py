"""POST /webhooks: verify, store in the inbox, answer 200 only after the commit.

The route stays thin: reading the body under a size limit, verification
(`service.adapters.stripe_events`) and storage (`service.inbox`) live elsewhere; the worker
processes what is stored.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Request, Response, current_app, jsonify, request

from handlers import REGISTRY
from service.adapters.stripe_client import build_stripe_client
from service.adapters.stripe_events import VerifiedEvent, WebhookRejected, WebhookVerifier
from service.inbox import InboxUnavailable, store_event
from service.logs import log_event
from service.runtime import Runtime

bp = Blueprint("webhooks", __name__)

VERIFIER_KEY = "meterfix.webhook_verifier"


@bp.post("/webhooks")
def receive_webhook() -> tuple[Response, int]:
    from service.app import runtime

    rt = runtime()
    try:
        body = read_body(request, rt.settings.mfx_max_body_bytes)
        event = _verifier(current_app, rt).verify(body, request.headers.get("Stripe-Signature"))
    except WebhookRejected as exc:
        log_event("webhook.rejected", level=logging.WARNING, reason=exc.reason, status=exc.status)
        return jsonify(error=exc.reason), exc.status
    return _store(rt, event)


def read_body(req: Request, limit: int) -> bytes:
    """The raw body, reading at most limit + 1 bytes; 413 beyond the limit."""
    if req.content_length is not None and req.content_length > limit:
        raise WebhookRejected("body too large", status=413)
    body = req.stream.read(limit + 1)
    if len(body) > limit:
        raise WebhookRejected("body too large", status=413)
    return body


def _store(rt: Runtime, event: VerifiedEvent) -> tuple[Response, int]:
    try:
        result = store_event(rt.engine, event, known_type=event.event_type in REGISTRY)
    except InboxUnavailable as exc:  # Stripe retries a 503; the event is not lost
        log_event(
            "webhook.store_failed", level=logging.ERROR, event_id=event.event_id, error=str(exc)
        )
        return jsonify(error="database unavailable"), 503
    log_event(
        "webhook.received", event_id=event.event_id, type=event.event_type, result=result.value
    )
    return jsonify(status=result.value, id=event.event_id), 200


def _verifier(app: Flask, rt: Runtime) -> WebhookVerifier:
    verifier = app.extensions.get(VERIFIER_KEY)
    if verifier is None:
        settings = rt.settings
        verifier = WebhookVerifier(
            settings.stripe_webhook_secrets,
            settings.stripe_webhook_tolerance,
            build_stripe_client(settings),
        )
        app.extensions[VERIFIER_KEY] = verifier
    assert isinstance(verifier, WebhookVerifier)
    return verifier
