"""The error reports the digests count as left unremediated (`unmatched` or `partial`) in
their window, per status and meter, with the failed records per code (`reports_left_between`),
and the statuses the digest's report links open (`UNREMEDIATED`). Apart from the dashboard's
list (`reports.py`), whose `left_at` dates them the same way: only the digests read these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, Join, func, select

from service.jobs.store.reports import ALERTS, REPORTS, left_at, partial_warning
from service.models import ErrorReportStatus
from service.models._types import table_of
from service.models.reports import ErrorTypeCount

TYPE_COUNTS = table_of(ErrorTypeCount)
UNREMEDIATED = (ErrorReportStatus.UNMATCHED, ErrorReportStatus.PARTIAL)


@dataclass(frozen=True)
class ReportsLeft:
    """Reports of one status and meter left `unmatched` or `partial`: how many, the records
    Stripe counted as failed in them, and those records per code."""

    status: str
    meter_id: str | None
    reports: int
    failed: int
    codes: dict[str, int]


def reports_left_between(
    connection: Connection, start: datetime, end: datetime
) -> list[ReportsLeft]:
    """The reports left `unmatched` or `partial` in [start, end), per status and meter: an
    unmatched one when it was recorded (it is found so then), a partial one when its task
    last found it short (its warning's last sighting; when it was recorded, without one)."""
    joined, where = _left_between(start, end)
    group = (REPORTS.c.status, REPORTS.c.meter_id)
    totals = select(
        *group, func.count().label("n"), func.sum(REPORTS.c.error_count).label("failed")
    )
    rows = connection.execute(totals.select_from(joined).where(where).group_by(*group))
    codes = _left_codes(connection, joined, where)
    return [
        ReportsLeft(
            str(row.status),
            row.meter_id,
            int(row.n),
            int(row.failed or 0),
            codes.get((str(row.status), row.meter_id), {}),
        )
        for row in rows
    ]


def _left_between(start: datetime, end: datetime) -> tuple[Join, ColumnElement[bool]]:
    """The reports joined to their partial warning (if any), and the condition for them to
    be left in [start, end)."""
    concluded = left_at()
    where = REPORTS.c.status.in_(UNREMEDIATED) & (concluded >= start) & (concluded < end)
    return REPORTS.outerjoin(ALERTS, partial_warning()), where


def _left_codes(
    connection: Connection, joined: Join, where: ColumnElement[bool]
) -> dict[tuple[str, str | None], dict[str, int]]:
    """(status, meter) -> code -> the failed records the reports counted of it."""
    counts = TYPE_COUNTS.c
    group = (REPORTS.c.status, REPORTS.c.meter_id, counts.code)
    query = select(*group, func.sum(counts.error_count).label("failed"))
    query = query.select_from(joined.join(TYPE_COUNTS, counts.report_id == REPORTS.c.id))
    found: dict[tuple[str, str | None], dict[str, int]] = {}
    for row in connection.execute(query.where(where).group_by(*group)):
        found.setdefault((str(row.status), row.meter_id), {})[str(row.code)] = int(row.failed or 0)
    return found
