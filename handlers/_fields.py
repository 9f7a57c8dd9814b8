"""Small readers for loosely typed event payloads: unknown or missing values never crash."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def first_text(source: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        found = text(source.get(key))
        if found:
            return found
    return None


def first_integer(source: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        found = integer(source.get(key))
        if found is not None:
            return found
    return None


def rfc3339(value: object) -> datetime | None:
    """Stripe's v2 timestamps ("2024-09-26T17:46:22.134Z") as aware UTC datetimes."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
