"""How a setting's value is read and checked, apart from the Settings class (`service.config`)
that declares them: bounds, durations, addresses, folders, and secrets masked for a log."""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

# Seconds settings, each at most MAX_SECONDS (a longer time overflowed where it was used).
SECONDS_SETTINGS = (
    "stripe_webhook_tolerance",
    "mfx_poll_interval",
    "mfx_worker_interval",
    "mfx_worker_lease",
    "mfx_task_time_limit",
    "mfx_heartbeat_silence",
)
MAX_SECONDS = 365 * 86400
MAX_RETENTION_DAYS = 36500
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

DATABASE_URL_PREFIXES = ("sqlite://", "sqlite+pysqlite://", "postgresql+psycopg://")
EMAIL_ADDRESS = re.compile(r"[^@\s,<>]+@[^@\s,<>]+")


def nested(one: str, other: str) -> bool:
    """Whether two folders (no slash at either end) are one, or one is inside the other."""
    return one == other or one.startswith(other + "/") or other.startswith(one + "/")


def web_address(value: str) -> SplitResult | None:
    """`value` split when it is an http(s) URL with a host (and a numeric port), else None."""
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        return None
    return parts if parts.scheme in ("http", "https") and parts.hostname else None


# Stripe dedupes meter event identifiers for at least 24 hours; we stay an hour inside.
GIVE_UP_HORIZON_SECONDS = 23 * 3600
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """ "90" (seconds), "15m", "6h", "1d" -> seconds; ValueError with the accepted forms."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:], 0)
    number = value[:-1] if unit else value
    if not number.isascii() or not number.isdigit() or len(number) > 9:
        raise ValueError(f"{text!r} is not a duration (use e.g. 90, 15m, 6h or 1d)")
    return int(number) * (unit or 1)


def mask(secret: str) -> str:
    """A secret as its kind (`sk_test_…`), for `Settings.redacted`."""
    if not secret:
        return ""
    prefix = secret.split("_", 2)
    return "_".join(prefix[:2]) + "_…" if len(prefix) > 2 else "…"
