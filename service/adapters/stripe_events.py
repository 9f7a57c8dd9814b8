"""Stripe events in and out: verify a webhook delivery, fetch the full event of a thin one.

Verification follows Stripe's rules (reference/stripe-facts.md §1): the signature is checked by
the SDK (`WebhookSignature.verify_header`) on the raw body against every configured secret
(rotation, several destinations); the header is parsed here first so malformed headers and
timestamps too far in the past OR the future (the SDK only checks the past) are rejected with a
precise reason. The body is parsed once, after the signature matched: building the SDK's
`Event`/`EventNotification` objects would only parse it again, so the keys those constructors
require are checked here instead (thin: id, object, type, created; snapshot: id, type, data).
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
STYLES = {THIN_OBJECT: PayloadStyle.THIN, SNAPSHOT_OBJECT: PayloadStyle.SNAPSHOT}
REQUIRED_KEYS = {
    PayloadStyle.THIN: ("id", "object", "type", "created"),  # EventNotification.__init__
    PayloadStyle.SNAPSHOT: ("id", "type", "data"),
}
MAX_ID_LENGTH = 255  # inbox_events.event_id and event_type


class WebhookRejected(Exception):
    """A delivery we refuse; `reason` goes back to the sender as `{"error": reason}`."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
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

    def __init__(self, secrets: Sequence[str], tolerance: int) -> None:
        self._secrets = tuple(s for s in secrets if s)
        self._tolerance = tolerance

    def verify(self, body: bytes, header: str | None, now: float | None = None) -> VerifiedEvent:
        if not self._secrets:
            raise WebhookRejected("no webhook secret configured")
        timestamp = signature_timestamp(header)
        if abs((time.time() if now is None else now) - timestamp) > self._tolerance:
            raise WebhookRejected("timestamp outside the tolerance zone")
        text = _text(body)
        self._verify_signature(text, header or "")
        return _verified(_decode(text), text)

    def _verify_signature(self, text: str, header: str) -> None:
        for secret in self._secrets:
            try:
                stripe.WebhookSignature.verify_header(text, header, secret, self._tolerance)
            except stripe.SignatureVerificationError:
                continue
            return
        raise WebhookRejected("no signature matches a configured secret")


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookRejected("invalid JSON") from exc


def _decode(text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise WebhookRejected("invalid JSON") from exc
    if not isinstance(payload, dict):
        raise WebhookRejected("invalid JSON: not an object")
    return payload


def _verified(payload: dict[str, Any], text: str) -> VerifiedEvent:
    kind = payload.get("object")
    style = STYLES.get(kind) if isinstance(kind, str) else None
    if style is None:
        raise WebhookRejected("unknown object: expected 'event' or 'v2.core.event'")
    missing = [key for key in REQUIRED_KEYS[style] if key not in payload]
    if missing:
        raise WebhookRejected(f"malformed event: missing {', '.join(missing)}")
    event_id, event_type = payload["id"], payload["type"]
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_ID_LENGTH:
        raise WebhookRejected("malformed event: bad id")
    if not isinstance(event_type, str) or not 0 < len(event_type) <= MAX_ID_LENGTH:
        raise WebhookRejected("malformed event: bad type")
    return VerifiedEvent(event_id, event_type, style, payload.get("livemode") is True, text)


def fetch_full_event(client: stripe.StripeClient, stored_body: str) -> dict[str, Any]:
    """The full v2 event behind a stored thin notification, as plain dicts.

    Goes through the SDK (`fetch_event`), so the request carries the event's context and
    trigger headers and only ever reaches the configured API base.
    """
    notification = client.parse_event_notification_without_verification(stored_body)
    event: dict[str, Any] = notification.fetch_event().to_dict()
    return event
