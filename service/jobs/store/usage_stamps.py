"""A stored row's usage timestamp, read as the remediation rules read it: in whole seconds,
as one text to compare rows under the same identifier by, and whether a row sent at a second
is the usage of a quarantined one. Pure functions: the re-run's pick, the marks of rows sent
again and the poller compare rows with them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from remediation.codes import ErrorCode
from remediation.core.rules.timestamps import READINGS, spelt_seconds
from remediation.fieldvalues import parse_timestamp
from remediation.limits import MAX_ISO_TEXT
from remediation.records import MFX_PREFIX


def stamp_of(value: object) -> str:
    """A row's timestamp as one text to compare: the whole seconds the remediation rules
    would send it at (`usage_second`: `1764000000000` and `2025-11-24T16:00:00Z` are
    `1764000000`), another text trimmed, none as ""."""
    seconds = usage_second(value)
    if seconds is not None:
        return str(seconds)
    return "" if value is None else str(value).strip()


def usage_second(value: object) -> int | None:
    """A row's timestamp in whole seconds, read as the remediation rules read it: digits (or
    a JSON number's spelling), ISO-8601 with a zone, a number in ms, µs or ns divided down
    (by its size, as a reason reads it); None when it has none or it is no time."""
    seconds = parse_timestamp(value)
    if seconds is None:
        seconds = spelt_seconds(value) if isinstance(value, str) else None
    if seconds is None:
        seconds = _iso_second(value)
    if seconds is None:
        return None
    for at_least, divisor, _unit in READINGS:
        if abs(seconds) >= at_least:
            return seconds // divisor
    return seconds


def _iso_second(value: object) -> int | None:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ISO_TEXT:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return None if moment.tzinfo is None else int(moment.timestamp())


def row_stamp(record: Mapping[str, Any] | None) -> str:
    """What tells a stored row's usage from another's under the same identifier: its
    timestamp (`stamp_of`); a row without one (Stripe takes it at the moment it receives
    it), its other fields as stored (event name, payload; not its error columns nor our
    `mfx_` notes) instead, after a NUL no timestamp holds: two rows
    without a timestamp are the same usage only when those are equal too (`k1` of cus_1
    quarantined on day 1 and `k1` of cus_2 on day 5 are two rows, each waiting)."""
    row = record or {}
    stamp = stamp_of(row.get("timestamp"))
    if stamp:
        return stamp
    usage = {
        str(key): value.strip() if isinstance(value, str) else value
        for key, value in row.items()
        if key not in _NOT_USAGE and not str(key).startswith(MFX_PREFIX)
    }
    return "\0" + json.dumps(usage, sort_keys=True, default=str)


# what a stored row holds beside its usage (its error columns, as Stripe's failed records
# and a quarantine file have them)
_NOT_USAGE = frozenset({"identifier", "timestamp", "error_code", "error_message"})


def sent_as_held(code: str | None, record: Mapping[str, Any] | None, sent: int | None) -> bool:
    """Whether a row sent at the second `sent` (None: without a timestamp) is the usage of
    a quarantined row of the same identifier (its `code` and `record`): the same second
    (`usage_second`: an identifier may be used again days later for other usage, Stripe
    deduping it for about 24 hours only). A row quarantined for its timestamp itself goes
    out at another one once fixed, and a row of no readable timestamp, or one sent without,
    cannot be told from another: those are the same usage by the identifier alone (marked
    as sent, never re-run a second time)."""
    if code in TIMESTAMP_CODES or sent is None:
        return True
    held = usage_second((record or {}).get("timestamp"))
    return held is None or held == sent


# the codes of a row whose timestamp is what is wrong: fixed, it goes out at another second
TIMESTAMP_CODES = frozenset(
    {
        ErrorCode.TIMESTAMP_IN_FUTURE,
        ErrorCode.TIMESTAMP_TOO_FAR_IN_PAST,
        ErrorCode.TIMESTAMP_INVALID,
    }
)
