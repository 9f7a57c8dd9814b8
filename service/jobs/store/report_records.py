"""Error reports as recorded and marked: what the handlers record (in the worker's
transaction, through a session), what the report task reads (`load_report`) and marks
(`set_report_status`), the unmatched and overwritten reports the poller takes up again, the
key of the warning an unmatched report raises, and the reports' retention (`purge_reports`).
Apart from the lists the dashboard and the digests read (`reports.py`, `reports_left.py`):
only the worker, the report task, the poller's handover and retention use these."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Engine, exists, func, literal, or_, select
from sqlmodel import Session, col
from sqlmodel import select as select_model

from service.db import session_scope
from service.db.statements import delete_batch
from service.jobs.store.reports import ALERTS, REPORTS
from service.jobs.store.runs import AUDIT, QUARANTINED, REPORT_PREFIX, RUNS
from service.models import ErrorReportStatus
from service.models._types import table_of
from service.models.alerts import AlertStatus
from service.models.inbox import InboxEvent, InboxStatus
from service.models.reports import ErrorReport, ErrorSample, ErrorTypeCount

INBOX = table_of(InboxEvent)  # read by retention only (`purge_reports`)


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
