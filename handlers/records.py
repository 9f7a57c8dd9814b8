"""What handlers hand to their context: plain records of what Stripe told us, and outcomes.

Only stdlib types here, so the service can persist them however it likes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class OutcomeStatus(StrEnum):
    RECORDED = "recorded"  # something new was stored
    UNCHANGED = "unchanged"  # the same event was already recorded: nothing changed


class RemediationKind(StrEnum):
    """What a handler can ask the service to remediate (the service runs it after commit)."""

    IMPORT_SET_ERRORS = "import_set_errors"  # the failed-records file of an import set
    IMPORT_SET_FAILED = "import_set_failed"  # a whole file that failed: repair its source
    ERROR_REPORT = "error_report"  # rows of ours that a meter error report is about


class RemediationStatus(StrEnum):
    """`ImportSet.remediation_status`: the one list of its values (the database checks it)."""

    PENDING = "pending"  # a failed-records file exists and waits for remediation
    NONE = "none"  # Stripe reported nothing to remediate
    NOT_NEEDED = "not_needed"  # the poller imported the file: no row failed
    DONE = "done"  # the remediation ran


@dataclass(frozen=True)
class Outcome:
    status: OutcomeStatus
    summary: str

    def __str__(self) -> str:
        return f"{self.status}: {self.summary}"


@dataclass(frozen=True)
class ErrorTypeRecord:
    code: str
    error_count: int


@dataclass(frozen=True)
class ErrorSampleRecord:
    code: str
    message: str | None
    identifier: str | None


@dataclass(frozen=True)
class ErrorReportRecord:
    """One meter error report (`error_report_triggered` or `no_meter_found`)."""

    event_id: str
    event_type: str
    meter_id: str | None
    livemode: bool
    validation_start: datetime | None
    validation_end: datetime | None
    summary: str | None
    error_count: int
    error_types: list[ErrorTypeRecord] = field(default_factory=list)
    samples: list[ErrorSampleRecord] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportSetRecord:
    """One import set as a snapshot event showed it."""

    import_set_id: str
    event_id: str
    event_type: str
    event_created: int | None
    status: str
    failed_reason: str | None
    source_file_id: str | None
    source_object: str | None
    errors_file_id: str | None
    errors_row_count: int | None
    successes_row_count: int | None
    rows_processed: int | None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def remediation_status(self) -> RemediationStatus:
        return RemediationStatus.PENDING if self.errors_file_id else RemediationStatus.NONE
