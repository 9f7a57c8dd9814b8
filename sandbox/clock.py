"""Time and id helpers shared by the sandbox modules (Stripe formats: unix ints and RFC 3339)."""

from __future__ import annotations

import secrets
import string
import time
from datetime import UTC, datetime

_ALPHABET = string.ascii_letters + string.digits


def now() -> float:
    return time.time()


def new_id(prefix: str, length: int = 24) -> str:
    """A Stripe-looking id such as `mtr_test_Ab3…`."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def rfc3339(timestamp: float) -> str:
    """Unix seconds -> `2024-09-26T17:46:22.134Z` (millisecond precision, as Stripe's v2 API)."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
