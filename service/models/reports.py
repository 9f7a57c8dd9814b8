"""What Stripe told us: meter error reports (thin events) and import sets (snapshot events)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, ForeignKey, Index, Integer
from sqlmodel import Field, SQLModel

from handlers.records import RemediationStatus
from service.models._types import (
    created_at_field,
    json_field,
    one_of,
    optional_time_field,
    text_field,
)


class ErrorReportStatus(StrEnum):
    RECORDED = "recorded"  # stored; its samples are being linked to rows we imported
    UNMATCHED = "unmatched"  # no sample names a row of ours (yet): kept, a warning raised
    REMEDIATED = "remediated"  # every reported row of ours was found and remediated
    PARTIAL = "partial"  # fewer rows found than reported: remediated, and alerted


class ErrorReport(SQLModel, table=True):
    """One `v1.billing.meter.error_report_triggered` or `no_meter_found` event."""

    __tablename__ = "error_reports"
    __table_args__ = (
        one_of("status", ErrorReportStatus, "ck_error_reports_status"),
        # the poller's look-up of the last day's reports to take up again (migration 0011)
        Index("ix_error_reports_status_created_at", "status", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=255, unique=True)
    event_type: str = Field(max_length=255)
    meter_id: str | None = Field(default=None, max_length=255, index=True)
    livemode: bool = False
    validation_start: datetime | None = optional_time_field()
    validation_end: datetime | None = optional_time_field()
    summary: str | None = text_field()
    error_count: int = 0
    status: str = Field(default=ErrorReportStatus.RECORDED, max_length=32)
    detail: dict[str, object] = json_field()
    created_at: datetime = created_at_field()


class ErrorTypeCount(SQLModel, table=True):
    __tablename__ = "error_type_counts"

    id: int | None = Field(default=None, primary_key=True)
    report_id: int = Field(
        sa_column=Column(Integer, ForeignKey("error_reports.id", ondelete="CASCADE"), index=True)
    )
    code: str = Field(max_length=255)
    error_count: int = 0


class ErrorSample(SQLModel, table=True):
    __tablename__ = "error_samples"

    id: int | None = Field(default=None, primary_key=True)
    report_id: int = Field(
        sa_column=Column(Integer, ForeignKey("error_reports.id", ondelete="CASCADE"), index=True)
    )
    code: str = Field(max_length=255)
    message: str | None = text_field()
    identifier: str | None = Field(default=None, max_length=255, index=True)
    # Filled when the identifier is one we imported (bundled poller or index mode).
    object_key: str | None = text_field()
    row_number: int | None = None


class ImportSet(SQLModel, table=True):
    """A `data_management.import_set` (Stripe's, or the bundled poller's local one)."""

    __tablename__ = "import_sets"
    __table_args__ = (
        one_of("remediation_status", RemediationStatus, "ck_import_sets_remediation_status"),
        # every run over an object looks up the import sets naming it (`object_sources`);
        # hash on PostgreSQL: equality is all it serves, and a btree entry cannot exceed
        # about 2.7 kB, which a key a webhook names need not respect
        Index("ix_import_sets_source_object", "source_object", postgresql_using="hash"),
    )

    id: int | None = Field(default=None, primary_key=True)
    import_set_id: str = Field(max_length=255, unique=True)
    origin: str = Field(default="stripe", max_length=16)  # stripe|poller
    last_event_id: str | None = Field(default=None, max_length=255)
    status: str = Field(max_length=64)
    failed_reason: str | None = text_field()
    source_file_id: str | None = Field(default=None, max_length=255)
    source_object: str | None = text_field()
    errors_file_id: str | None = Field(default=None, max_length=255)
    errors_row_count: int | None = None
    successes_row_count: int | None = None
    rows_processed: int | None = None
    remediation_status: str = Field(default=RemediationStatus.PENDING, max_length=32)
    detail: dict[str, object] = json_field()
    created_at: datetime = created_at_field()
    updated_at: datetime | None = optional_time_field()
