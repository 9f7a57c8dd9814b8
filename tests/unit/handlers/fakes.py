"""A recording HandlerContext: handlers are pure, the database side is tested elsewhere."""

from __future__ import annotations

from handlers.records import ErrorReportRecord, ImportSetRecord, OutcomeStatus, RemediationKind


class RecordingContext:
    def __init__(self) -> None:
        self.reports: dict[str, ErrorReportRecord] = {}
        self.import_sets: dict[str, ImportSetRecord] = {}
        self.remediations: list[tuple[RemediationKind, str]] = []

    def record_error_report(self, report: ErrorReportRecord) -> OutcomeStatus:
        if report.event_id in self.reports:
            return OutcomeStatus.UNCHANGED
        self.reports[report.event_id] = report
        return OutcomeStatus.RECORDED

    def record_import_set(self, import_set: ImportSetRecord) -> OutcomeStatus:
        previous = self.import_sets.get(import_set.import_set_id)
        if previous is not None and previous.event_id == import_set.event_id:
            return OutcomeStatus.UNCHANGED
        self.import_sets[import_set.import_set_id] = import_set
        return OutcomeStatus.RECORDED

    def request_remediation(self, kind: RemediationKind, ref: str) -> bool:
        if (kind, ref) in self.remediations:
            return False
        self.remediations.append((kind, ref))
        return True
