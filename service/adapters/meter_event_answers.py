"""How the meter event stream's answers are read (`meter_events.StripeMeterEventSink`): which
failures are worth retrying, the `Retry-After` Stripe asked for, a session's lifetime, and a
failure given up on as our MeterEventSendError."""

from __future__ import annotations

import time
from datetime import datetime
from email.utils import parsedate_to_datetime

import stripe

from service.errors import MeterEventSendError

SESSION_SECONDS = 15 * 60  # Stripe's session lifetime, when `expires_at` cannot be read


def is_transient(exc: stripe.StripeError) -> bool:
    """Worth retrying: rate limited, a timeout or dropped connection, a conflict, a 5xx, or
    an answer that is not Stripe's (no status)."""
    if isinstance(exc, stripe.RateLimitError | stripe.APIConnectionError):
        return True
    status = exc.http_status
    return status is None or status == 409 or status >= 500


def retry_after_seconds(exc: stripe.StripeError) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date), if any."""
    headers = exc.headers or {}
    value = next((str(v) for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def session_lifetime(created: object, expires_at: object) -> float:
    """Seconds the session lives, from its RFC 3339 `created` and `expires_at`."""
    try:
        start = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(expires_at).replace("Z", "+00:00"))
    except ValueError:
        return SESSION_SECONDS
    seconds = (end - start).total_seconds()
    return seconds if 0 < seconds <= SESSION_SECONDS else SESSION_SECONDS


def send_error(
    exc: stripe.StripeError, what: str, *, permanent: bool = False, retry_after: bool = False
) -> MeterEventSendError:
    """`retry_after`: carry the answer's `Retry-After` (a transient failure given up on), so
    the poller's next attempt at the object is not before the time Stripe asked for."""
    status = exc.http_status
    detail = exc.user_message or type(exc).__name__
    return MeterEventSendError(
        f"{what}: HTTP {status}: {detail}",
        status=status,
        permanent=permanent,
        retry_after=retry_after_seconds(exc) if retry_after else None,
    )
