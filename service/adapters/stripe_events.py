"""Stripe events in and out: verify a webhook delivery, fetch the full event of a thin one.

Verification follows Stripe's rules (reference/stripe-facts.md §1): the signature is checked by
the SDK on the raw body against every configured secret (rotation, several destinations);
the header is parsed here first so malformed headers and timestamps too far in the past OR
the future (the SDK only checks the past) are rejected with a precise reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import stripe

from service.models.inbox import PayloadStyle

THIN_OBJECT = "v2.core.event"
SNAPSHOT_OBJECT = "event"


class WebhookRejected(Exception):
    """A delivery we refuse; `reason` goes back to the sender as `{"error": reason}`."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class VerifiedEvent:
    event_id: str
    event_type: str
    style: PayloadStyle
    livemode: bool
    body: str


def signature_timestamp(header: str | None) -> int:
    """The `t=` of a `Stripe-Signature` header; rejects missing, empty or malformed headers."""
    if not header:
        raise WebhookRejected("missing Stripe-Signature header")
    timestamp: int | None = None
    has_v1 = False
    for item in header.split(","):
        key, sep, value = item.partition("=")
        if not sep or not value or key != key.strip() or value != value.strip():
            raise WebhookRejected("malformed Stripe-Signature header")
        if key == "t":
            if not value.isdigit():
                raise WebhookRejected("malformed Stripe-Signature header")
            timestamp = int(value)
        has_v1 = has_v1 or key == "v1"
    if timestamp is None:
        raise WebhookRejected("malformed Stripe-Signature header")
    if not has_v1:
        raise WebhookRejected("no v1 signature in Stripe-Signature header")
    return timestamp


class WebhookVerifier:
    """Checks one delivery against every secret; built once per app, shared by requests."""

    def __init__(self, secrets: Sequence[str], tolerance: int, client: stripe.StripeClient) -> None:
        self._secrets = tuple(s for s in secrets if s)
        self._tolerance = tolerance
        self._client = client

    def verify(self, body: bytes, header: str | None, now: float | None = None) -> VerifiedEvent:
        if not self._secrets:
            raise WebhookRejected("no webhook secret configured")
        timestamp = signature_timestamp(header)
        if abs((time.time() if now is None else now) - timestamp) > self._tolerance:
            raise WebhookRejected("timestamp outside the tolerance zone")
        text, payload = _decode(body)
        style = _style(payload)
        self._verify_signature(text, header or "", style)
        return _verified(payload, style, text)

    def _verify_signature(self, text: str, header: str, style: PayloadStyle) -> None:
        for secret in self._secrets:
            try:
                self._verify_one(text, header, secret, style)
            except stripe.SignatureVerificationError:
                continue
            except (ValueError, KeyError) as exc:  # signature fine, payload unusable
                raise WebhookRejected(f"malformed event: {type(exc).__name__}") from exc
            return
        raise WebhookRejected("no signature matches a configured secret")

    def _verify_one(self, text: str, header: str, secret: str, style: PayloadStyle) -> None:
        if style is PayloadStyle.THIN:
            self._client.parse_event_notification(text, header, secret, self._tolerance)
        else:
            stripe.Webhook.construct_event(text, header, secret, self._tolerance)


def _decode(body: bytes) -> tuple[str, dict[str, Any]]:
    try:
        text = body.decode("utf-8")
        payload = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookRejected("invalid JSON") from exc
    if not isinstance(payload, dict):
        raise WebhookRejected("invalid JSON: not an object")
    return text, payload


def _style(payload: dict[str, Any]) -> PayloadStyle:
    kind = payload.get("object")
    if kind == THIN_OBJECT:
        return PayloadStyle.THIN
    if kind == SNAPSHOT_OBJECT:
        return PayloadStyle.SNAPSHOT
    raise WebhookRejected("unknown object: expected 'event' or 'v2.core.event'")


def _verified(payload: dict[str, Any], style: PayloadStyle, text: str) -> VerifiedEvent:
    event_id, event_type = payload.get("id"), payload.get("type")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 255:
        raise WebhookRejected("malformed event: bad id")
    if not isinstance(event_type, str) or not event_type or len(event_type) > 255:
        raise WebhookRejected("malformed event: bad type")
    livemode = payload.get("livemode") is True
    return VerifiedEvent(event_id, event_type, style, livemode, text)


def fetch_full_event(client: stripe.StripeClient, stored_body: str) -> dict[str, Any]:
    """The full v2 event behind a stored thin notification, as plain dicts.

    Goes through the SDK (`fetch_event`), so the request carries the event's context and
    trigger headers and only ever reaches the configured API base.
    """
    notification = client.parse_event_notification_without_verification(stored_body)
    event: dict[str, Any] = notification.fetch_event().to_dict()
    return event
