"""The database behind `handlers.context.HandlerContext`.

One instance per processed event, bound to the worker's transaction: the handler's writes
and the inbox row's `done` commit together, so a crash in between redoes both or neither.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement
from sqlmodel import Session, col, func, select

from handlers.records import ErrorReportRecord, ImportSetRecord, OutcomeStatus, RemediationKind
from service.jobs.store.report_records import (
    UNMATCHED_ALERT,
    find_report,
    has_linked_sample,
    recorded_report,
    unmatched_alert_key,
)
from service.jobs.store.reports import find_import_set
from service.models import ErrorReportStatus
from service.models._types import utcnow
from service.models.reports import ErrorReport, ErrorSample, ErrorTypeCount, ImportSet
from service.notify.alerts import raise_alert
from service.notify.shown import counted
from service.poller.store import imported_rows_by_identifier, taken_by
from service.worker.inbox import requeue_event
from service.worker.tasks import TaskKind, enqueue_task, task_id


class DatabaseHandlerContext:
    def __init__(self, session: Session) -> None:
        self.session = session
        # import sets this event names another failed-records file for than the one recorded
        self.new_file: set[str] = set()

    def record_error_report(self, report: ErrorReportRecord) -> OutcomeStatus:
        if find_report(self.session, report.event_id) is not None:
            return OutcomeStatus.UNCHANGED
        row = ErrorReport(
            event_id=report.event_id,
            event_type=report.event_type,
            meter_id=report.meter_id,
            livemode=report.livemode,
            validation_start=report.validation_start,
            validation_end=report.validation_end,
            summary=report.summary,
            error_count=report.error_count,
            detail=report.detail,
        )
        self.session.add(row)
        self.session.flush()
        assert row.id is not None
        self._add_counts_and_samples(row.id, report)
        return OutcomeStatus.RECORDED

    def _add_counts_and_samples(self, report_id: int, report: ErrorReportRecord) -> None:
        for item in report.error_types:
            self.session.add(
                ErrorTypeCount(report_id=report_id, code=item.code, error_count=item.error_count)
            )
        identifiers = {s.identifier for s in report.samples if s.identifier}
        known = imported_rows_by_identifier(self.session, identifiers)
        if known:  # only rows Stripe could have taken by the report's end are its rows
            known = taken_by(self.session, known, report.validation_end or utcnow())
        for sample in report.samples:
            imported = known.get(sample.identifier or "")
            self.session.add(
                ErrorSample(
                    report_id=report_id,
                    code=sample.code,
                    message=sample.message,
                    identifier=sample.identifier,
                    object_key=imported.object_key if imported else None,
                    row_number=imported.row_number if imported else None,
                )
            )

    def request_remediation(self, kind: RemediationKind, ref: str) -> bool:
        """Queue the task; a report none of whose samples is one of our rows is only marked
        `unmatched` (kept with its samples, its meter's warning raised)."""
        if kind is RemediationKind.ERROR_REPORT and not self._has_rows_of_ours(ref):
            return False
        connection, task = self.session.connection(), TaskKind(kind.value)
        if enqueue_task(connection, task, ref):
            return True
        # the task of the file recorded before: run again, for this file (its own run key);
        # done, it swallowed the request and the new file's rows were never remediated
        return (
            kind is RemediationKind.IMPORT_SET_ERRORS
            and ref in self.new_file
            and (requeue_event(connection, task_id(task, ref)))
        )

    def _has_rows_of_ours(self, event_id: str) -> bool:
        report = recorded_report(self.session, event_id)
        linked = has_linked_sample(self.session, report.id)
        if not linked and report.status == ErrorReportStatus.RECORDED:
            report.status = ErrorReportStatus.UNMATCHED
            self.session.add(report)
            self._unmatched_alert(report)
        return linked

    def _unmatched_alert(self, report: ErrorReport) -> None:
        """A warning, one per meter, counting its reports: Stripe refused usage that
        meterfix cannot remediate, so nobody would be told otherwise. It says what the
        meter's reports still unmatched add up to (this one among them), not this one's
        alone: an alert counting three reports said "1 meter event", naming the last."""
        self.session.flush()  # this report's status, read with the others'
        told = _unmatched_of_meter(self.session, report)
        codes = ", ".join(f"{code} x{n}" for code, n in sorted(told.counts.items())) or "no codes"
        meter = report.meter_id or "unknown event names"
        several = told.reports > 1
        reports = f" in {told.reports} error reports" if several else ""
        named = _named(told)
        raise_alert(
            self.session.connection(),  # commits with the report
            key=unmatched_alert_key(report),
            severity="warning",
            kind=UNMATCHED_ALERT,
            subject=(
                f"Stripe refused {counted(told.errors, 'meter event')} ({meter}){reports} that "
                "meterfix cannot trace to a bucket row"
            ),
            message=(
                f"Error report{'s' if several else ''} {named}: {codes}. None of "
                f"{'their' if several else 'its'} sampled rows is one the "
                "poller recorded: usage sent to Stripe some other way, or, with MFX_POLLER=off, "
                "rows of bucket files (nothing indexes them; MFX_POLLER=index has such reports "
                "remediated). With MFX_POLLER=index or on, a report that came before the poller "
                "recorded its rows is taken up by the pass that does, within a day. Stripe "
                "billed none of these events."
            ),
            detail=_unmatched_detail(report, told),
            meter=report.meter_id,
            rows=told.errors,
            links={"event": report.event_id},
        )

    def record_import_set(self, import_set: ImportSetRecord) -> OutcomeStatus:
        row = find_import_set(self.session, import_set.import_set_id)
        if row is None:
            row = ImportSet(
                import_set_id=import_set.import_set_id,
                status=import_set.status,
                remediation_status=import_set.remediation_status,
            )
        elif _already_applied(row, import_set):
            return OutcomeStatus.UNCHANGED
        elif row.errors_file_id != import_set.errors_file_id:
            row.remediation_status = import_set.remediation_status
            if import_set.errors_file_id:
                self.new_file.add(import_set.import_set_id)
        _apply(row, import_set)
        self.session.add(row)
        return OutcomeStatus.RECORDED


@dataclass(frozen=True)
class _Unmatched:
    """What a meter's reports still `unmatched` add up to."""

    reports: int
    event_ids: list[str]  # the latest `NAMED_REPORTS`, oldest first
    errors: int
    counts: dict[str, int]  # code -> errors


# How many of a meter's reports the warning names (its message and detail): the latest
NAMED_REPORTS = 20


def _unmatched_of_meter(session: Session, report: ErrorReport) -> _Unmatched:
    """The reports of `report`'s warning (`unmatched_alert_key`: its meter's, or without one
    its event type's) still `unmatched`, `report` among them."""
    same = (
        col(ErrorReport.meter_id) == report.meter_id
        if report.meter_id is not None
        else col(ErrorReport.meter_id).is_(None)
        & (col(ErrorReport.event_type) == report.event_type)
    )
    which: ColumnElement[bool] = (col(ErrorReport.status) == ErrorReportStatus.UNMATCHED) & same
    reports, errors = session.exec(
        select(func.count(), func.coalesce(func.sum(ErrorReport.error_count), 0)).where(which)
    ).one()
    latest = session.exec(
        select(ErrorReport.event_id)
        .where(which)
        .order_by(col(ErrorReport.id).desc())
        .limit(NAMED_REPORTS)
    ).all()
    per_code = session.exec(
        select(ErrorTypeCount.code, func.sum(ErrorTypeCount.error_count))
        .join(ErrorReport, col(ErrorReport.id) == col(ErrorTypeCount.report_id))
        .where(which)
        .group_by(col(ErrorTypeCount.code))
    ).all()
    counts = {str(code): int(n or 0) for code, n in per_code}
    return _Unmatched(int(reports), list(reversed(latest)), int(errors), counts)


def _named(told: _Unmatched) -> str:
    """The reports by event id, the latest `NAMED_REPORTS` of many."""
    more = told.reports - len(told.event_ids)
    return ", ".join(told.event_ids) + (f" (and {more} earlier)" if more > 0 else "")


def _unmatched_detail(report: ErrorReport, told: _Unmatched) -> dict[str, object]:
    detail: dict[str, object] = {"event_id": report.event_id}
    if told.reports > 1:
        detail |= {"event_ids": told.event_ids, "reports": told.reports}
    return detail | {"meter_id": report.meter_id, "counts": told.counts}


def _already_applied(row: ImportSet, import_set: ImportSetRecord) -> bool:
    """The same event again, or an older event arriving after a newer one. An import set
    recorded as processed (`succeeded*`: rows of it billed) is turned `failed` only by an
    event known to be newer: one of the same second, or of no time we can read, repaired the
    whole file again, every billed row re-sent as `<id>-mfx1` (billed twice)."""
    if row.last_event_id == import_set.event_id:
        return True
    applied = row.detail.get("event_created")
    newer = import_set.event_created
    undoing = import_set.status == "failed" and str(row.status).startswith("succeeded")
    if not isinstance(applied, int) or newer is None:
        return undoing
    return newer <= applied if undoing else newer < applied


def _apply(row: ImportSet, import_set: ImportSetRecord) -> None:
    row.last_event_id = import_set.event_id
    row.status = import_set.status
    row.failed_reason = import_set.failed_reason
    row.source_file_id = import_set.source_file_id
    row.source_object = import_set.source_object
    row.errors_file_id = import_set.errors_file_id
    row.errors_row_count = import_set.errors_row_count
    row.successes_row_count = import_set.successes_row_count
    row.rows_processed = import_set.rows_processed
    row.detail = {
        **import_set.detail,
        "event_type": import_set.event_type,
        "event_created": import_set.event_created,
    }
    row.updated_at = utcnow()
