"""The quarantine filter: which quarantined rows a page, a CSV download, a digest link or a
quarantine re-run means (`QuarantineFilter`), read from query parameters and written back to
them. Apart from the queries (`quarantine.py`, `quarantine_conditions`): the web's parameters
read it without the store's tables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from service.db.pages import MAX_ROW_ID
from service.errors import BadParameter

MAX_FILTER_CHARS = 255
MAX_FILTER_RUNS = 100  # runs one filter may name (a digest link names up to 20)


@dataclass(frozen=True)
class QuarantineFilter:
    """Which quarantined rows: by code, meter, customer, runs (the rows of any of them; none:
    every run's) and time (each on an index), whether a quarantine re-run quarantined them or
    another run (`rerun`: yes/no; the runs' ids by trigger, then the rows' run index: a digest
    counts new input and re-runs apart, its links past 20 runs say which) and whether their
    object sent them again since (`taken_again`: yes/no; not indexed, few rows are marked: a
    page of unmarked rows reads about a page of rows)."""

    code: str | None = None
    meter: str | None = None
    customer: str | None = None
    run: tuple[int, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    taken_again: bool | None = None
    rerun: bool | None = None

    def as_query(self) -> dict[str, str]:
        """The filter as query parameters (for links, CSV and the re-run's record): one value
        each, runs as `3,7` (read back by `from_query`, as a single run kept before was)."""
        values = {
            "code": self.code,
            "meter": self.meter,
            "customer": self.customer,
            "run": ",".join(str(run) for run in self.run) or None,
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "taken_again": None if self.taken_again is None else YES_NO[self.taken_again],
            "rerun": None if self.rerun is None else YES_NO[self.rerun],
        }
        return {key: value for key, value in values.items() if value is not None}

    @classmethod
    def from_query(cls, args: Mapping[str, str]) -> QuarantineFilter:
        """The filter from query parameters (a request's, or those a re-run kept); a bad
        one is a `BadParameter` with the reason."""
        found = cls(
            code=_code(args),
            meter=_text(args, "meter"),
            customer=_text(args, "customer"),
            run=_runs(args),
            since=_time(args, "since"),
            until=_time(args, "until", through_the_day=True),
            taken_again=_yes_no(args, "taken_again"),
            rerun=_yes_no(args, "rerun"),
        )
        if found.since and found.until and found.since > found.until:
            raise BadParameter("since must not be after until")
        return found


def positive_int(args: Mapping[str, str], name: str, default: int) -> int:
    raw = args.get(name, "")
    if raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or int(raw) <= 0:
        raise BadParameter(f"{name} must be a positive whole number, not {raw[:40]!r}")
    if int(raw) > MAX_ROW_ID:  # as a run or a cursor: no row has such an id
        raise BadParameter(f"{name} must be at most {MAX_ROW_ID}, not {raw}")
    return int(raw)


def _runs(args: Mapping[str, str]) -> tuple[int, ...]:
    """`run`: a run id, or several separated by commas; in id order, each once."""
    raw = args.get("run", "").strip()
    if raw == "":
        return ()
    parts = [part.strip() for part in raw.split(",")]
    if "" in parts:
        raise BadParameter(f"run must be run ids separated by commas, not {raw[:40]!r}")
    if len(parts) > MAX_FILTER_RUNS:
        raise BadParameter(f"run takes at most {MAX_FILTER_RUNS} runs, not {len(parts)}")
    return tuple(sorted({positive_int({"run": part}, "run", 0) for part in parts}))


YES_NO = {True: "yes", False: "no"}


def _yes_no(args: Mapping[str, str], name: str) -> bool | None:
    raw = args.get(name, "").strip().lower()
    if raw == "":
        return None
    if raw not in ("yes", "no"):
        raise BadParameter(f"{name} must be yes or no, not {raw[:40]!r}")
    return raw == "yes"


def _code(args: Mapping[str, str]) -> str | None:
    """`code` as codes are stored: in lower case (Stripe's are read so). `NO_METER`, or an
    unknown code as Stripe spelt it, matched nothing: an empty list, no reason given."""
    code = _text(args, "code")
    return None if code is None else code.lower()


def _text(args: Mapping[str, str], name: str) -> str | None:
    value = args.get(name, "").strip()
    if len(value) > MAX_FILTER_CHARS:
        raise BadParameter(f"{name} is longer than {MAX_FILTER_CHARS} characters")
    if "\x00" in value:  # PostgreSQL's text holds none: the query would fail (a 503)
        raise BadParameter(f"{name} holds a NUL character (U+0000); no stored value does")
    return value or None


def _time(args: Mapping[str, str], name: str, through_the_day: bool = False) -> datetime | None:
    """ISO-8601 date or date-time; without a zone it is UTC. A date alone is its midnight, or
    with `through_the_day` (an inclusive end: `until`) its last microsecond, so "until
    2026-12-01" takes in that day's rows as a person means it."""
    raw = args.get(name, "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith("Z") else raw)
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if through_the_day and _date_only(raw):
            day_end = datetime.max.replace(tzinfo=UTC) - value
            value += min(timedelta(days=1) - timedelta(microseconds=1), day_end)
        return value
    except (ValueError, OverflowError):  # OverflowError: past year 1 or 9999 in UTC
        raise BadParameter(f"{name} must be an ISO-8601 date or time, not {raw[:40]!r}") from None


def _date_only(raw: str) -> bool:
    try:
        date.fromisoformat(raw)
    except ValueError:
        return False
    return True
