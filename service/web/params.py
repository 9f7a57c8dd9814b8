"""Query parameters of pages and API calls, checked: a bad one is a `BadParameter` with the
reason (the API answers 400 with it, a page shows it), never a 500."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from service.errors import BadParameter
from service.models.alerts import AlertSeverity, AlertStatus
from service.models.inbox import InboxStatus

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_FILTER_CHARS = 255
E = TypeVar("E", bound=StrEnum)


@dataclass(frozen=True)
class Page:
    """Keyset pagination: `limit` rows with id below `cursor` (None: from the newest)."""

    limit: int = DEFAULT_LIMIT
    cursor: int | None = None


@dataclass(frozen=True)
class QuarantineFilter:
    code: str | None = None
    meter: str | None = None
    customer: str | None = None
    run: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def as_query(self) -> dict[str, str]:
        """The filter as query parameters (for links, CSV and the re-run's record)."""
        values = {
            "code": self.code,
            "meter": self.meter,
            "customer": self.customer,
            "run": None if self.run is None else str(self.run),
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
        }
        return {key: value for key, value in values.items() if value is not None}


def page(args: Mapping[str, str]) -> Page:
    limit = _positive_int(args, "limit", DEFAULT_LIMIT)
    if limit > MAX_LIMIT:
        raise BadParameter(f"limit must be at most {MAX_LIMIT}")
    raw = args.get("cursor", "")
    return Page(limit, _positive_int(args, "cursor", 0) if raw != "" else None)


def quarantine_filter(args: Mapping[str, str]) -> QuarantineFilter:
    run = args.get("run", "")
    found = QuarantineFilter(
        code=_text(args, "code"),
        meter=_text(args, "meter"),
        customer=_text(args, "customer"),
        run=_positive_int(args, "run", 0) if run != "" else None,
        since=_time(args, "since"),
        until=_time(args, "until"),
    )
    if found.since and found.until and found.since > found.until:
        raise BadParameter("since must not be after until")
    return found


def choice(args: Mapping[str, str], name: str, kind: type[E]) -> E | None:
    """A value of a closed set (e.g. alert status), or None when not given."""
    value = args.get(name, "")
    if value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = "|".join(member.value for member in kind)
        raise BadParameter(f"{name} must be one of {allowed}, not {value[:40]!r}") from None


def alert_status(args: Mapping[str, str]) -> AlertStatus | None:
    return choice(args, "status", AlertStatus)


def alert_severity(args: Mapping[str, str]) -> AlertSeverity | None:
    return choice(args, "severity", AlertSeverity)


def event_status(args: Mapping[str, str]) -> InboxStatus | None:
    return choice(args, "status", InboxStatus)


def _positive_int(args: Mapping[str, str], name: str, default: int) -> int:
    raw = args.get(name, "")
    if raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or int(raw) <= 0:
        raise BadParameter(f"{name} must be a positive whole number, not {raw[:40]!r}")
    return int(raw)


def _text(args: Mapping[str, str], name: str) -> str | None:
    value = args.get(name, "").strip()
    if len(value) > MAX_FILTER_CHARS:
        raise BadParameter(f"{name} is longer than {MAX_FILTER_CHARS} characters")
    return value or None


def _time(args: Mapping[str, str], name: str) -> datetime | None:
    """ISO-8601 date or date-time; without a zone it is UTC."""
    raw = args.get(name, "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith("Z") else raw)
    except ValueError:
        raise BadParameter(f"{name} must be an ISO-8601 date or time, not {raw[:40]!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
