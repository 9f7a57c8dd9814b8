"""Query parameters of pages and API calls, checked: a bad one is a `BadParameter` with the
reason (the API answers 400 with it, a page shows it), never a 500."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import fields
from enum import StrEnum
from typing import TypeVar

from werkzeug.datastructures import MultiDict

from service.db.pages import DEFAULT_PAGE_LIMIT, MAX_ROW_ID, Page
from service.errors import BadParameter, NotFound
from service.jobs.store.quarantine_filter import QuarantineFilter, positive_int
from service.jobs.store.reports import ReportFilter
from service.models import ErrorReportStatus
from service.models.alerts import AlertSeverity, AlertStatus
from service.models.inbox import InboxStatus
from service.web.corrections import CorrectionFilter

MAX_LIMIT = 500
E = TypeVar("E", bound=StrEnum)

PAGING = ("limit", "cursor")
QUARANTINE_FILTERS = tuple(field.name for field in fields(QuarantineFilter))
QUARANTINE_SEVERAL = ("run",)  # `run=3&run=7`: the rows of any of them
REPORT_FILTERS = ("status", "meter", "no_meter", "since", "until")
REPORT_SEVERAL = ("status",)  # `status=unmatched&status=partial`: reports of either
CORRECTION_FILTERS = tuple(field.name for field in fields(CorrectionFilter))
# The longest value each filter of a run's corrections may hold: its column's length.
CORRECTION_FILTER_CHARS = {"code": 255, "rule": 255, "field": 255, "identifier": 512}


def known(
    args: MultiDict[str, str],
    *names: str,
    several: Collection[str] = (),
    taker: str = "this list",
) -> dict[str, str]:
    """A request's query values, one per name, for a list or page that takes `names`: a name
    it does not take is refused (a misspelt filter, `?cod=no_meter`, answered every row as if
    it were the filtered list, and a page's re-run form then held no filter), and so is a
    name given more than once with different values (the first alone was read, unsaid),
    unless it is one of `several`: their values joined by commas, as `run=3,7`."""
    unknown = sorted(set(args) - set(names))
    if unknown:
        raise BadParameter(
            f"unknown parameter {unknown[0][:40]!r}; {taker} takes {', '.join(names)}"
        )
    return {name: one_value(name, args.getlist(name), several) for name in args}


def page(args: Mapping[str, str]) -> Page:
    limit = positive_int(args, "limit", DEFAULT_PAGE_LIMIT)
    if limit > MAX_LIMIT:
        raise BadParameter(f"limit must be at most {MAX_LIMIT}")
    raw = args.get("cursor", "")
    return Page(limit, positive_int(args, "cursor", 0) if raw != "" else None)


def row_id(value: int, what: str) -> int:
    """A row id from a path (`<int:...>` takes any number of digits): one past `MAX_ROW_ID`
    names no row (the database would refuse to compare it: a 500, or a 503 on PostgreSQL)."""
    if value > MAX_ROW_ID:
        raise NotFound(f"no {what} with id {value}")
    return value


def quarantine_filter(args: Mapping[str, str]) -> QuarantineFilter:
    """The quarantine filter of a request (the jobs' store runs it). `run` may be given more
    than once (`run=3&run=7`, as `run=3,7`): the rows of any of those runs; another filter
    given twice with different values is refused, as the re-run refuses it."""
    return QuarantineFilter.from_query(_one_each(args))


def rerun_filter(*sources: MultiDict[str, str]) -> QuarantineFilter:
    """The filter of a re-run (the API's query, body and form; the dashboard's form): a
    re-run takes every row its filter matches, so what would be read as less than it says
    is refused: a name no filter has (`cod=no_meter`), an empty value (`run=`, both read as
    no filter, re-ran every quarantined row) and a filter given twice with different values,
    in one source or two (one of them was taken, unsaid). The form's CSRF token is no
    filter, but is sent."""
    names = {name for source in sources for name in source} - {"csrf_token"}
    unknown = sorted(names - set(QUARANTINE_FILTERS))
    if unknown:
        listed = ", ".join(QUARANTINE_FILTERS)
        raise BadParameter(f"unknown filter {unknown[0][:40]!r}; the filters are {listed}")
    merged: dict[str, str] = {}
    for source in sources:
        for name in (name for name in source if name in names):
            value = _rerun_value(name, source.getlist(name))
            if merged.setdefault(name, value) != value:
                raise BadParameter(f"{name[:40]} is given more than once, with different values")
    return QuarantineFilter.from_query(merged)


def _rerun_value(name: str, values: list[str]) -> str:
    if any(value.strip() == "" for value in values):
        raise BadParameter(
            f"{name[:40]} has no value: an empty filter is read as none (every quarantined "
            "row); leave it out"
        )
    return one_value(name, values, QUARANTINE_SEVERAL)


def correction_filter(args: Mapping[str, str]) -> CorrectionFilter:
    """The filter of a run's corrections (`known`'s values): each text as stored, the code
    in lower case as codes are stored (as the quarantine filter reads it); a value longer
    than its column, or holding a NUL (PostgreSQL's text holds none: a 503), is refused."""
    values = {name: _filter_text(args, name) for name in CORRECTION_FILTERS}
    code = values["code"]
    return CorrectionFilter(**{**values, "code": None if code is None else code.lower()})


def _filter_text(args: Mapping[str, str], name: str) -> str | None:
    value = args.get(name, "").strip()
    most = CORRECTION_FILTER_CHARS[name]
    if len(value) > most:
        raise BadParameter(f"{name} is longer than {most} characters")
    if "\x00" in value:
        raise BadParameter(f"{name} holds a NUL character (U+0000); no stored value does")
    return value or None


class YesNo(StrEnum):
    YES = "yes"
    NO = "no"


def report_filter(args: Mapping[str, str]) -> ReportFilter:
    """The error reports filter of a request's values (`known`'s, with `REPORT_SEVERAL`).
    `status` takes several statuses, as `run` takes several runs (`status=unmatched,partial`
    or `status=unmatched&status=partial`); `meter`, `since` and `until` are read as the
    quarantine filter reads them (a date alone as `until` is that whole day)."""
    given = {name: args[name] for name in REPORT_FILTERS if name in args}
    found = QuarantineFilter.from_query({k: given.get(k, "") for k in ("meter", "since", "until")})
    no_meter = choice(given, "no_meter", YesNo)
    if found.meter is not None and no_meter == YesNo.YES:
        raise BadParameter("meter names a meter; no_meter=yes the reports without one")
    return ReportFilter(
        status=_statuses(given.get("status", "")),
        meter=found.meter,
        no_meter=None if no_meter is None else no_meter == YesNo.YES,
        since=found.since,
        until=found.until,
    )


def _statuses(raw: str) -> tuple[ErrorReportStatus, ...]:
    """`status`: one status, or several separated by commas; in a fixed order, each once."""
    if raw.strip() == "":
        return ()
    parts = [part.strip() for part in raw.split(",")]
    found = {_status(part) for part in parts}
    return tuple(status for status in ErrorReportStatus if status in found)


def _status(part: str) -> ErrorReportStatus:
    try:
        return ErrorReportStatus(part)
    except ValueError:
        allowed = "|".join(ErrorReportStatus)
        raise BadParameter(f"status must be one of {allowed}, not {part[:40]!r}") from None


def _one_each(args: Mapping[str, str]) -> Mapping[str, str]:
    """A query string's values one per name (a mapping reads the first alone: the other
    runs' rows, or the other code's, were left out unsaid, and a bad one went unchecked)."""
    if not isinstance(args, MultiDict):
        return args
    return {name: one_value(name, args.getlist(name), QUARANTINE_SEVERAL) for name in args}


def one_value(name: str, values: list[str], several: Collection[str]) -> str:
    """A parameter given more than once: one of `several` (runs, report statuses), all its
    values; another, refused unless every value is the same."""
    if name in several:
        return joined(values)
    if len(set(values)) > 1:
        raise BadParameter(f"{name[:40]} is given more than once, with different values")
    return values[0]


def joined(values: list[str]) -> str:
    """Several values as one, `3,7` (empty ones left out: `run=` names no run)."""
    return ",".join(value for value in values if value.strip())


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
