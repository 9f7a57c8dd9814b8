"""Signed webhook deliveries, exactly as Stripe sends them."""

from __future__ import annotations

import json
import secrets as token_source
import time
from typing import Any

import requests
import stripe

from sandbox.objects import JSON

THIN_FIELDS = ("id", "object", "type", "created", "livemode", "context", "reason")


def is_v2_event(event: JSON) -> bool:
    return event.get("object") == "v2.core.event"


def thin_notification(event: JSON) -> JSON:
    """What an event destination receives for a v2 event: everything but `data`."""
    body = {name: event.get(name) for name in THIN_FIELDS}
    if "related_object" in event:
        body["related_object"] = event["related_object"]
    return body


def delivery_body(event: JSON) -> str:
    """The exact text POSTed: the thin notification (v2) or the whole snapshot (v1)."""
    return json.dumps(thin_notification(event) if is_v2_event(event) else event)


def sign(body: str, secret: str, timestamp: int | None = None) -> str:
    return str(
        stripe.WebhookSignature.generate_signature_header(
            body, secret, timestamp=timestamp or int(time.time())
        )
    )


def post_signed(
    body: str, url: str, secrets: list[str], *, test_mode: bool = True, timeout: float = 10.0
) -> dict[str, Any]:
    """POST a signed body; one `v1=` per secret (as during a secret rotation), then, for a
    test-mode event, Stripe's `v0=` under a secret nobody has: receivers must ignore it."""
    timestamp = int(time.time())
    header = sign(body, secrets[0], timestamp)
    for extra in secrets[1:]:
        header += "," + sign(body, extra, timestamp).split(",", 1)[1]
    if test_mode:
        header += f",v0={token_source.token_hex(32)}"
    headers = {"Content-Type": "application/json", "Stripe-Signature": header}
    response = requests.post(url, data=body.encode(), headers=headers, timeout=timeout)
    return {"status": response.status_code, "body": response.text}
