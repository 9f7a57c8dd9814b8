"""Stripe events in and out: verify a webhook delivery, fetch the full event of a thin one.

Verification follows Stripe's published rules and goes through the SDK:
`StripeClient.parse_event_notification` for thin notifications (`v2.core.event`), and
`StripeClient.construct_event` for snapshot events (`event`), each of which checks the
signature on the raw body first. Every configured secret is tried in turn (rotation, several
destinations). The header is parsed here beforehand so missing or malformed headers and
timestamps too far in the past OR the future (the SDK only checks the past) are rejected with a
precise reason; a body the SDK will not take after a good signature is decoded here to say why
(invalid JSON, unknown `object`, missing keys).

A signed body must also be a well-formed event to be stored (docs/architecture.md, "The flow
of an event"):
nested at most `MAX_NESTING` levels (checked by a scan only when the body has more brackets
than that, which Stripe's events never have), and an `id` and `type` that fit their columns
and hold no control characters (PostgreSQL refuses NUL in text: such an id could never be
stored, and Stripe would retry it for days).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import stripe

from remediation.limits import json_depth_over
from service.errors import EventUnreadable, WebhookRejected
from service.models.inbox import PayloadStyle

THIN_OBJECT = "v2.core.event"
SNAPSHOT_OBJECT = "event"
STYLES = {THIN_OBJECT: PayloadStyle.THIN, SNAPSHOT_OBJECT: PayloadStyle.SNAPSHOT}
REQUIRED_KEYS = {
    PayloadStyle.THIN: ("id", "object", "type", "created"),  # EventNotification.__init__
    PayloadStyle.SNAPSHOT: ("id", "type", "data"),
}
MAX_ID_LENGTH = 255  # inbox_events.event_id and event_type
MAX_NESTING = 32  # Stripe's events nest a handful of levels; the JSON decoder recurses
# A unix time in seconds has 10 digits until the year 2286; more is not a timestamp (and
# int() refuses strings over 4,300 digits).
MAX_TIMESTAMP_DIGITS = 12


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
    if not header.isascii():
        raise WebhookRejected("malformed Stripe-Signature header: not ASCII")
    timestamp: int | None = None
    has_v1 = False
    for item in header.split(","):
        key, sep, value = item.partition("=")
        if not sep or not value or key != key.strip() or value != value.strip():
            raise WebhookRejected("malformed Stripe-Signature header")
        if key == "t":
            if not value.isdigit() or len(value) > MAX_TIMESTAMP_DIGITS:
                raise WebhookRejected("malformed Stripe-Signature header: bad timestamp")
            if timestamp is not None:  # the SDK checks the first, the window took the last
                raise WebhookRejected("malformed Stripe-Signature header: more than one t=")
            timestamp = int(value)
        has_v1 = has_v1 or key == "v1"
    if timestamp is None:
        raise WebhookRejected("malformed Stripe-Signature header")
    if not has_v1:
        raise WebhookRejected("no v1 signature in Stripe-Signature header")
    return timestamp


class WebhookVerifier:
    """Checks one delivery against every secret; built once per app, shared by requests.

    `client` is only used to build the SDK's event objects (they keep it for later calls);
    nothing here calls Stripe."""

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
        text = _text(body)
        if _may_nest_deeper(text) and self._signed(text, header or ""):
            _require_nesting_within_bound(text)
        for secret in self._secrets:
            try:
                return self._parse(text, header or "", secret)
            except stripe.SignatureVerificationError:
                continue
        raise WebhookRejected("no signature matches a configured secret")

    def _signed(self, text: str, header: str) -> bool:
        """Whether any secret signed the body (rejects it otherwise); the SDK checks again
        when it parses, so this runs only on the rare bodies that need a scan first."""
        for secret in self._secrets:
            try:
                stripe.WebhookSignature.verify_header(text, header, secret, self._tolerance)
            except stripe.SignatureVerificationError:
                continue
            return True
        raise WebhookRejected("no signature matches a configured secret")

    def _parse(self, text: str, header: str, secret: str) -> VerifiedEvent:
        """Verify against one secret and parse with the SDK; SignatureVerificationError when
        the signature is not this secret's."""
        try:
            notification = self._client.parse_event_notification(
                text, header, secret, self._tolerance
            )
        except stripe.SignatureVerificationError:
            raise
        except (ValueError, LookupError, TypeError, AttributeError):
            # The SDK checks the signature before it parses: the signature is good and the
            # body is no thin notification the SDK reads. A snapshot event, a well-formed thin
            # one it cannot read (no `related_object`: the worker fetches it by its id), or a
            # reason to refuse it.
            return self._snapshot(text, header, secret)
        return _checked(
            notification.id,
            notification.type,
            notification.object,
            notification.livemode,
            text,
        )

    def _snapshot(self, text: str, header: str, secret: str) -> VerifiedEvent:
        payload = _decode(text)
        kind = payload.get("object")
        _require_keys(payload, kind)
        checked = _checked(payload["id"], payload["type"], kind, payload.get("livemode"), text)
        if checked.style is not PayloadStyle.SNAPSHOT:
            # its id, type and object are sound: stored, as DESIGN has a well-formed event
            # whose data cannot be used (dead-lettered by the worker if its event cannot be
            # read either); refused, an error report lacking `related_object` was lost
            stripe.WebhookSignature.verify_header(text, header, secret, self._tolerance)
            return checked
        try:
            self._client.construct_event(text, header, secret, self._tolerance)
        except stripe.SignatureVerificationError:
            raise
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            raise WebhookRejected(f"malformed event: {type(exc).__name__}") from exc
        return checked


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookRejected("invalid JSON") from exc


def _may_nest_deeper(text: str) -> bool:
    """False for nearly every body: fewer brackets than the bound cannot nest beyond it."""
    return text.count("{") + text.count("[") > MAX_NESTING


def _require_nesting_within_bound(text: str) -> None:
    """Rejects a body nested deeper than MAX_NESTING, before any JSON decoder recurses into it:
    one pass over its brackets outside strings (`limits.json_depth_over`; an unterminated
    string ends the text, so a string of escaped quotes is no quadratic rescan). Brackets
    without a pair are left to the decoder, which stops at the first and never recurses
    deeper than the brackets before it."""
    if json_depth_over(text, MAX_NESTING):
        raise WebhookRejected(f"malformed event: nested deeper than {MAX_NESTING} levels")


def _decode(text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise WebhookRejected("invalid JSON") from exc
    if not isinstance(payload, dict):
        raise WebhookRejected("invalid JSON: not an object")
    return payload


def _require_keys(payload: dict[str, Any], kind: object) -> None:
    """Rejects an unknown `object`, or an event without the keys its kind requires."""
    style = STYLES.get(kind) if isinstance(kind, str) else None
    if style is None:
        raise WebhookRejected("unknown object: expected 'event' or 'v2.core.event'")
    missing = [key for key in REQUIRED_KEYS[style] if key not in payload]
    if missing:
        raise WebhookRejected(f"malformed event: missing {', '.join(missing)}")


def _checked(
    event_id: object, event_type: object, kind: object, livemode: object, text: str
) -> VerifiedEvent:
    """What the inbox stores, once the SDK took the event: ids must fit their columns and
    hold printable characters only (`str.isprintable` is false for control characters,
    lone surrogates and invisible separators, none of which a Stripe id has)."""
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_ID_LENGTH:
        raise WebhookRejected("malformed event: bad id")
    if not event_id.isprintable():
        raise WebhookRejected("malformed event: bad id (control or unprintable characters)")
    if not isinstance(event_type, str) or not 0 < len(event_type) <= MAX_ID_LENGTH:
        raise WebhookRejected("malformed event: bad type")
    if not event_type.isprintable():
        raise WebhookRejected("malformed event: bad type (control or unprintable characters)")
    style = STYLES.get(kind) if isinstance(kind, str) else None
    if style is None:
        raise WebhookRejected("unknown object: expected 'event' or 'v2.core.event'")
    return VerifiedEvent(event_id, event_type, style, livemode is True, text)


def fetch_full_event(client: stripe.StripeClient, stored_body: str) -> dict[str, Any]:
    """The full v2 event behind a stored thin notification, as plain dicts.

    Goes through the SDK (`fetch_event`), so the request carries the event's context and
    trigger headers and only ever reaches the configured API base.
    """
    try:
        notification = client.parse_event_notification_without_verification(stored_body)
    except (ValueError, LookupError, TypeError, AttributeError):
        # a well-formed notification the SDK cannot read (no `related_object`): the event
        # itself, by its id (refused at intake, such an error report was lost)
        return _retrieved(client, str(json.loads(stored_body)["id"]))
    try:
        event: dict[str, Any] = notification.fetch_event().to_dict()
    except (ValueError, LookupError, TypeError, AttributeError) as exc:
        raise _unreadable(notification.id, exc) from exc
    return event


def _retrieved(client: stripe.StripeClient, event_id: str) -> dict[str, Any]:
    try:
        event: dict[str, Any] = client.v2.core.events.retrieve(event_id).to_dict()
    except (ValueError, LookupError, TypeError, AttributeError) as exc:
        raise _unreadable(event_id, exc) from exc
    return event


def _unreadable(event_id: str, exc: Exception) -> EventUnreadable:
    """The SDK could not build the event Stripe answered (`data: null` raised AttributeError,
    retried for 45 minutes as if transient). Its reason, short: never the body's rows."""
    return EventUnreadable(
        f"the full event {event_id[:80]} cannot be read: {type(exc).__name__}: {str(exc)[:200]}"
    )
