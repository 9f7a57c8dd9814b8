"""Import sets (Stripe's and the poller's) and meter error reports: what the handlers record
(in the worker's transaction, through a session), what the jobs read and mark, and what the
dashboard lists."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Join,
    case,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlmodel import Session, col
from sqlmodel import select as select_model

from handlers.records import RemediationStatus
from service.db import Listing, Page, delete_batch, keyset, session_scope
from service.jobs.store.runs import AUDIT, QUARANTINED, REPORT_PREFIX, RUNS
from service.models import ErrorReportStatus
from service.models._types import as_utc, table_of, utcnow
from service.models.alerts import Alert, AlertStatus
from service.models.inbox import InboxEvent, InboxStatus
from service.models.reports import ErrorReport, ErrorSample, ErrorTypeCount, ImportSet

IMPORT_SETS = table_of(ImportSet)
FAILED = "failed"  # an import set's status: the whole file failed, none of its rows taken
REPORTS = table_of(ErrorReport)
TYPE_COUNTS = table_of(ErrorTypeCount)
INBOX = table_of(InboxEvent)  # read by retention only (`purge_reports`)
ALERTS = table_of(Alert)


def list_import_sets(connection: Connection, page: Page) -> Listing:
    return keyset(connection, select(IMPORT_SETS), IMPORT_SETS.c.id, page)


def get_import_set(connection: Connection, import_set_id: str) -> dict[str, Any] | None:
    row = connection.execute(
        select(IMPORT_SETS).where(IMPORT_SETS.c.import_set_id == import_set_id)
    ).first()
    return None if row is None else dict(row._mapping)


@dataclass(frozen=True)
class ReportFilter:
    """Which error reports the dashboard lists: of any of these statuses (none: every status),
    of one meter or, with `no_meter`, of none (no) or of any (yes), and left between `since`
    and `until` (both included), as the digest dates them (`left_at`)."""

    status: tuple[ErrorReportStatus, ...] = ()
    meter: str | None = None
    no_meter: bool | None = None
    since: datetime | None = None
    until: datetime | None = None

    def as_query(self) -> dict[str, str]:
        """The filter as query parameters (for the next page's link): statuses as `a,b`."""
        values = {
            "status": ",".join(self.status) or None,
            "meter": self.meter,
            "no_meter": None if self.no_meter is None else ("yes" if self.no_meter else "no"),
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
        }
        return {key: value for key, value in values.items() if value is not None}


def list_reports(connection: Connection, page: Page, found: ReportFilter) -> Listing:
    """The reports `found` picks, newest first, each with when its task last found it short
    (`found_short_at`: its partial warning's last sighting, None without one)."""
    query = select(REPORTS, ALERTS.c.last_seen_at.label("found_short_at"))
    query = query.select_from(REPORTS.outerjoin(ALERTS, _partial_warning()))
    return keyset(connection, query.where(*_report_conditions(found)), REPORTS.c.id, page)


def _report_conditions(found: ReportFilter) -> list[ColumnElement[bool]]:
    reports = REPORTS.c
    where: list[ColumnElement[bool]] = []
    if found.status:
        where.append(reports.status.in_(found.status))
    if found.meter is not None:
        where.append(reports.meter_id == found.meter)
    if found.no_meter is not None:
        where.append(
            reports.meter_id.is_(None) if found.no_meter else reports.meter_id.is_not(None)
        )
    if found.since is not None:
        where.append(left_at() >= found.since)
    if found.until is not None:
        where.append(left_at() <= found.until)
    return where


def get_report(connection: Connection, event_id: str) -> dict[str, Any] | None:
    row = connection.execute(select(REPORTS).where(REPORTS.c.event_id == event_id)).first()
    return None if row is None else dict(row._mapping)


# --- import sets ---------------------------------------------------------------------------


def find_import_set(session: Session, import_set_id: str) -> ImportSet | None:
    return session.exec(
        select_model(ImportSet).where(ImportSet.import_set_id == import_set_id)
    ).first()


def import_set(engine: Engine, import_set_id: str) -> ImportSet | None:
    with Session(engine) as session:
        return find_import_set(session, import_set_id)


def import_sets(engine: Engine, import_set_ids: Sequence[str]) -> list[ImportSet]:
    """The recorded import sets of these ids (one query; an id not recorded is left out)."""
    if not import_set_ids:
        return []
    wanted = col(ImportSet.import_set_id).in_(list(import_set_ids))
    with Session(engine) as session:
        return list(session.exec(select_model(ImportSet).where(wanted)).all())


def object_names(prefix: str, key: str | None) -> list[str]:
    """The names the object `key` goes by: as the poller records it (under the bucket's
    `prefix`) and as Stripe's connector may name it (relative to the prefix)."""
    if not key:
        return []
    if not prefix:
        return [key]
    other = key.removeprefix(prefix) if key.startswith(prefix) else prefix + key
    return [key] if not other else [key, other]


def object_sources(engine: Engine, prefix: str, key: str | None) -> list[str]:
    """The sources of the runs over the rows of the object `key` (in a bucket under
    `prefix`): its names, and the files Stripe kept of the import sets that name it
    (`stripe_files_of`)."""
    names = object_names(prefix, key)
    return [*names, *stripe_files_of(engine, names)]


def stripe_files_of(engine: Engine, names: list[str]) -> list[str]:
    """The files Stripe kept of the import sets of the object known by `names` (its key, and
    the key without the bucket's prefix, as Stripe's connector may name it) that name the
    file, not the object, as their runs' source: the failed-records files (`import_set_errors`)
    and the copies of files that failed whole (`import_set_failed` reads Stripe's copy when
    the object holds other bytes since). One look-up on `ix_import_sets_source_object`."""
    if not names:
        return []
    query = select(
        IMPORT_SETS.c.errors_file_id, IMPORT_SETS.c.source_file_id, IMPORT_SETS.c.status
    ).where(IMPORT_SETS.c.source_object.in_(names))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    found = {row.errors_file_id for row in rows}
    found |= {row.source_file_id for row in rows if row.status == FAILED}
    return sorted(str(file_id) for file_id in found if file_id)


def import_sets_of_object(engine: Engine, names: list[str]) -> list[ImportSet]:
    """The import sets of the object known by `names` (see `stripe_files_of`), in the
    order they were recorded (one look-up on `ix_import_sets_source_object`)."""
    if not names:
        return []
    query = select_model(ImportSet).where(col(ImportSet.source_object).in_(names))
    with Session(engine) as session:
        return list(session.exec(query.order_by(col(ImportSet.id))).all())


def report_ends(engine: Engine, event_ids: Sequence[str]) -> dict[str, datetime]:
    """event id -> the end of the report's window (when it was stored, without one), for
    the recorded reports of these ids (one query)."""
    if not event_ids:
        return {}
    query = select(REPORTS.c.event_id, REPORTS.c.validation_end, REPORTS.c.created_at).where(
        REPORTS.c.event_id.in_(list(event_ids))
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    ends = (
        (str(row.event_id), as_utc(row.validation_end) or as_utc(row.created_at)) for row in rows
    )
    return {event_id: end for event_id, end in ends if end is not None}


def mark_import_set_remediated(engine: Engine, import_set_id: str, run_key: str) -> None:
    """The import set's remediation is done, by the run `run_key`."""
    with session_scope(engine) as session:
        row = session.exec(
            select_model(ImportSet).where(ImportSet.import_set_id == import_set_id)
        ).one()
        row.remediation_status = RemediationStatus.DONE
        row.detail = {**row.detail, "run_key": run_key}
        row.updated_at = utcnow()
        session.add(row)


# --- error reports -------------------------------------------------------------------------


def find_report(session: Session, event_id: str) -> ErrorReport | None:
    return session.exec(select_model(ErrorReport).where(ErrorReport.event_id == event_id)).first()


def recorded_report(session: Session, event_id: str) -> ErrorReport:
    """The report (which must be recorded)."""
    return session.exec(select_model(ErrorReport).where(ErrorReport.event_id == event_id)).one()


def has_linked_sample(session: Session, report_id: int | None) -> bool:
    """Whether a sample of the report is a row we imported (linked to its object)."""
    linked = session.exec(
        select_model(ErrorSample.id).where(
            ErrorSample.report_id == report_id, col(ErrorSample.object_key).is_not(None)
        )
    ).first()
    return linked is not None


def unmatched_reports(
    session: Session, since: datetime
) -> list[tuple[ErrorReport, list[ErrorSample]]]:
    """The reports none of whose samples was a row of ours when they came (`unmatched`),
    recorded since `since`, each with its samples that name an identifier."""
    reports = _reports_since(session, ErrorReportStatus.UNMATCHED, since)
    samples = session.exec(
        select_model(ErrorSample)
        .join(ErrorReport, col(ErrorReport.id) == col(ErrorSample.report_id))
        .where(ErrorReport.status == ErrorReportStatus.UNMATCHED)
        .where(col(ErrorReport.created_at) >= since)
        .where(col(ErrorSample.identifier).is_not(None))
        .order_by(col(ErrorSample.id))
    ).all()
    by_report: dict[int | None, list[ErrorSample]] = {}
    for sample in samples:
        by_report.setdefault(sample.report_id, []).append(sample)
    return [(report, by_report.get(report.id, [])) for report in reports]


def error_counts(session: Session, report_id: int | None) -> dict[str, int]:
    """code -> errors the report counted of it."""
    rows = session.exec(
        select_model(ErrorTypeCount.code, ErrorTypeCount.error_count).where(
            ErrorTypeCount.report_id == report_id
        )
    ).all()
    return _per_code(rows)


def _per_code(rows: Iterable[tuple[str, int]]) -> dict[str, int]:
    """code -> errors, summed: a report may name one code in two `error_types` entries (two
    without a code are both `unknown`); kept one per code, the last entry's count was the
    report's, and a report found short was marked remediated."""
    counts: dict[str, int] = {}
    for code, count in rows:
        counts[str(code)] = counts.get(str(code), 0) + int(count)
    return counts


def load_report(
    engine: Engine, event_id: str
) -> tuple[ErrorReport, list[ErrorSample], dict[str, int]] | None:
    """The report, its samples and its error count per code; None when not recorded."""
    with Session(engine) as session:
        report = find_report(session, event_id)
        if report is None:
            return None
        samples = list(
            session.exec(select_model(ErrorSample).where(ErrorSample.report_id == report.id)).all()
        )
        counts = session.exec(
            select_model(ErrorTypeCount.code, ErrorTypeCount.error_count).where(
                ErrorTypeCount.report_id == report.id
            )
        ).all()
    return report, samples, _per_code(counts)


# The kind (and key prefix) of the warning an unmatched report raises, per meter
# (`worker.handler_context`); resolved once none of the meter's last day's reports is left
# unmatched (`poller.handover`).
UNMATCHED_ALERT = "error_report.unmatched"

# The report's detail key naming the objects its run found overwritten by a version the
# poller had not recorded yet (a `partial` report, taken up again when it does).
OVERWRITTEN = "overwritten"


def set_report_status(
    engine: Engine, event_id: str, status: ErrorReportStatus, overwritten: Sequence[str] = ()
) -> None:
    """Set the report's status; `overwritten`: the objects overwritten (a partial report's)
    by a version the poller had not recorded."""
    with session_scope(engine) as session:
        report = session.exec(
            select_model(ErrorReport).where(ErrorReport.event_id == event_id)
        ).one()
        mark_report(report, status, overwritten)
        session.add(report)


def mark_report(
    report: ErrorReport, status: ErrorReportStatus, overwritten: Sequence[str] = ()
) -> None:
    """`set_report_status` on a report the caller's session holds."""
    report.status = status
    detail = {k: v for k, v in report.detail.items() if k != OVERWRITTEN}
    report.detail = {**detail, OVERWRITTEN: sorted(overwritten)} if overwritten else detail


def unmatched_alert_key(report: ErrorReport) -> str:
    """The key of the warning an unmatched report raises: one per meter."""
    return f"{UNMATCHED_ALERT}:{report.meter_id or report.event_type}"


def any_unmatched_like(session: Session, report: ErrorReport) -> bool:
    """Whether a report of the same meter (or, without one, of the same event type) is still
    `unmatched`."""
    same = (
        ErrorReport.meter_id == report.meter_id
        if report.meter_id is not None
        else col(ErrorReport.meter_id).is_(None) & (ErrorReport.event_type == report.event_type)
    )
    found = session.exec(
        select_model(ErrorReport.id)
        .where(ErrorReport.status == ErrorReportStatus.UNMATCHED)
        .where(same)
    ).first()
    return found is not None


def reports_overwritten(session: Session, since: datetime, keys: set[str]) -> list[ErrorReport]:
    """The `partial` reports recorded since `since` whose run found one of these objects
    overwritten by a version the poller had not recorded then."""
    reports = _reports_since(session, ErrorReportStatus.PARTIAL, since)
    return [r for r in reports if set(_texts(r.detail.get(OVERWRITTEN))) & keys]


def _reports_since(
    session: Session, status: ErrorReportStatus, since: datetime
) -> Sequence[ErrorReport]:
    return session.exec(
        select_model(ErrorReport)
        .where(ErrorReport.status == status)
        .where(col(ErrorReport.created_at) >= since)
        .order_by(col(ErrorReport.id))
    ).all()


def _texts(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


# The key prefix of the warning a `partial` report raises, `<prefix>:<event id>`, when its
# task finds it short (`jobs.report_outcome._conclude`): raised again each time it is.
PARTIAL_ALERT = "error_report.partial"
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
    return REPORTS.outerjoin(ALERTS, _partial_warning()), where


def _partial_warning() -> ColumnElement[bool]:
    """A report's partial warning (`PARTIAL_ALERT`), to outer-join the alerts on."""
    return ALERTS.c.alert_key == literal(f"{PARTIAL_ALERT}:") + REPORTS.c.event_id


def left_at() -> ColumnElement[datetime]:
    """When a report (outer-joined to its partial warning) was left as it is: when it was
    recorded (an unmatched one is found so then); a partial one, when its task last found it
    short (the warning's last sighting; when it was recorded, without one). The digest counts
    a report in the window holding this moment, and the dashboard's since/until filter by it."""
    reports = REPORTS.c
    found_short = func.coalesce(ALERTS.c.last_seen_at, reports.created_at)
    partial = reports.status == ErrorReportStatus.PARTIAL
    return case((partial, found_short), else_=reports.created_at)


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


def purge_reports(engine: Engine, before: datetime, batch: int, task_prefix: str) -> int:
    """Retention: delete up to `batch` error reports recorded before the cutoff (their
    samples and counts with them, ON DELETE CASCADE) that nothing needs any more: not one
    whose event, or task (`task_prefix` + event id), is unfinished (pending, processing,
    or dead-lettered: a replay reads the report); nor one rows of whose runs are kept (a
    quarantined row's refusal is timed by its report's window, `refusal_moments`); nor an
    `unmatched` one while its meter's warning is up (`any_unmatched_like` keeps it up)."""
    where = (REPORTS.c.created_at < before) & ~_report_needed(task_prefix)
    return delete_batch(engine, REPORTS, where, batch)


def _report_needed(task_prefix: str) -> ColumnElement[bool]:
    reports, inbox, alerts = REPORTS.c, INBOX.c, ALERTS.c
    unfinished = (InboxStatus.PENDING, InboxStatus.PROCESSING, InboxStatus.DEAD)
    its_work = inbox.event_id.in_([reports.event_id, literal(task_prefix) + reports.event_id])
    run_key = RUNS.c.run_key  # `error_report:<event id>:<object>`, a range on its unique index
    of_report = (run_key >= literal(REPORT_PREFIX) + reports.event_id + ":") & (
        run_key < literal(REPORT_PREFIX) + reports.event_id + ";"
    )
    kept = [
        select(RUNS.c.id).join(rows, rows.c.run_id == RUNS.c.id).where(of_report)
        for rows in (QUARANTINED, AUDIT)
    ]
    warning = literal(f"{UNMATCHED_ALERT}:") + func.coalesce(reports.meter_id, reports.event_type)
    warned = select(alerts.id).where(
        alerts.alert_key == warning, alerts.status != AlertStatus.RESOLVED
    )
    return or_(
        exists(select(inbox.id).where(its_work, inbox.status.in_(unfinished))),
        *(exists(query) for query in kept),
        (reports.status == ErrorReportStatus.UNMATCHED) & exists(warned),
    )


# --- the bundled poller's own import sets (written when it imports an object) --------------

POLLER_ORIGIN = "poller"


def save_poller_import_set(
    engine: Engine, import_set_id: str, source_object: str, **values: Any
) -> ImportSet:
    """Create or update the import set the poller records for one object version."""
    with session_scope(engine) as session:
        query = select_model(ImportSet).where(ImportSet.import_set_id == import_set_id)
        row = session.exec(query).first() or ImportSet(import_set_id=import_set_id, status="")
        row.origin, row.source_object, row.updated_at = POLLER_ORIGIN, source_object, utcnow()
        for name, value in values.items():
            setattr(row, name, value)
        session.add(row)
    return row


def pending_poller_import_sets(connection: Connection) -> list[tuple[str, bool]]:
    """(id, whether the whole file failed) of the poller's import sets whose failed rows, or
    failed file, still wait for remediation."""
    query = select(IMPORT_SETS.c.import_set_id, IMPORT_SETS.c.status).where(
        IMPORT_SETS.c.origin == POLLER_ORIGIN,
        IMPORT_SETS.c.remediation_status == RemediationStatus.PENDING,
    )
    return [(str(i), status == FAILED) for i, status in connection.execute(query)]
