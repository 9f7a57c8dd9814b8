"""The port handlers talk through. `service.worker.handler_context` implements it with the database.

A handler records what Stripe said and asks for a remediation only through these methods;
the service implements each one. Every method is idempotent per event.
"""

from __future__ import annotations

from typing import Protocol

from handlers.records import ErrorReportRecord, ImportSetRecord, OutcomeStatus, RemediationKind


class HandlerContext(Protocol):
    def record_error_report(self, report: ErrorReportRecord) -> OutcomeStatus:
        """Store a meter error report once per event id (UNCHANGED when already stored)."""
        ...

    def record_import_set(self, import_set: ImportSetRecord) -> OutcomeStatus:
        """Store or update an import set; UNCHANGED when this event was already applied
        or is older than the one already applied."""
        ...

    def request_remediation(self, kind: RemediationKind, ref: str) -> bool:
        """Queue a remediation of `ref` (import set id or event id), committed with the
        records; asking again for the same one queues nothing (False)."""
        ...
