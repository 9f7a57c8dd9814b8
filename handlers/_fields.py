"""Small readers for loosely typed event payloads: unknown or missing values never crash."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# Stripe's ids are a prefix, an underscore and letters or digits (`impset_…`, `file_…`); a
# hyphen is tolerated. Anything else (a slash, a dot, a control character) never reaches a
# URL path, a bucket key or a database column.
_STRIPE_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
# A file is downloaded by id through the Files API, which takes `file_` and letters, digits
# or underscores only (`service.adapters.stripe_files`): an id it refuses makes the event
# unusable, never a task retried as if the failure were passing.
_FILE_ID = re.compile(r"file_[A-Za-z0-9_]{1,250}")


def mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# Counts (rows, errors) go into INTEGER columns: 32 bits on PostgreSQL. Texts of a bounded
# column: an import set's status; error codes, sample identifiers and meter ids.
MAX_COUNT = 2**31 - 1
MAX_UNIX_TIME = 253_402_300_799  # 9999-12-31T23:59:59Z
STATUS_CHARS = 64
ID_CHARS = 255


def text(value: object, most: int | None = None) -> str | None:
    """A non-empty string as a column holds it: a NUL (PostgreSQL's text holds none: the
    insert would fail, and the event be retried as if the failure were passing) as U+FFFD,
    and at most `most` characters (a longer one cut, ending in an ellipsis)."""
    if not isinstance(value, str) or not value:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if most is not None and len(value) > most:
        value = value[: most - 1] + "\u2026"
    return value


def kind(value: object) -> str:
    """How a reason names a value that is not what was expected."""
    if value is None:
        return "missing"
    if isinstance(value, Mapping):
        return "an object"
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), "a list" if isinstance(value, list) else type(value).__name__)


def is_stripe_id(value: str) -> bool:
    return _STRIPE_ID.fullmatch(value) is not None


def is_file_id(value: str) -> bool:
    return _FILE_ID.fullmatch(value) is not None


def integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        digits = value.strip().lstrip("-")
        # ASCII digits only (`²` is a digit to str.isdigit, not to int), at most 18 of them
        if digits.isascii() and digits.isdigit() and len(digits) <= 18:
            return int(value)
    return None


def unix_time(value: object) -> int | None:
    """A unix time a datetime holds (years 1970-9999), else None."""
    found = integer(value)
    return found if found is not None and 0 <= found <= MAX_UNIX_TIME else None


def count(value: object) -> int | None:
    """A count: none below zero, at most `MAX_COUNT` (a larger one is held as that)."""
    found = integer(value)
    return None if found is None or found < 0 else min(found, MAX_COUNT)


def first_text(source: Mapping[str, Any], *keys: str, most: int | None = None) -> str | None:
    for key in keys:
        found = text(source.get(key), most)
        if found:
            return found
    return None


def first_count(source: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        found = count(source.get(key))
        if found is not None:
            return found
    return None


def rfc3339(value: object) -> datetime | None:
    """Stripe's v2 timestamps ("2024-09-26T17:46:22.134Z") as aware UTC datetimes."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: past year 1 or 9999 in UTC
        return None
