"""Remediation runs and their full audit: corrections, quarantined rows, output objects."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Index, Integer, text
from sqlalchemy.types import TypeEngine
from sqlmodel import AutoString, Field, SQLModel

from service.models._types import (
    created_at_field,
    json_field,
    one_of,
    optional_time_field,
    text_field,
    utcnow,
)


class RunStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class RunTrigger(StrEnum):
    """What started a run."""

    IMPORT_SET_SUCCEEDED = "import_set.succeeded"  # its failed-records file
    IMPORT_SET_FAILED = "import_set.failed"  # the source of a whole-file failure
    ERROR_REPORT = "error_report"  # rows of ours a meter error report is about
    POLLER = "poller"  # rows the bundled poller's validation rejected
    QUARANTINE_RERUN = "quarantine_rerun"  # quarantined rows an operator re-ran
    CLI = "cli"


class OutputKind(StrEnum):
    """What a file a run wrote holds."""

    CORRECTED = "corrected"
    QUARANTINE = "quarantine"
    AUDIT = "audit"
    REPAIRED = "repaired"


def _identifier_type(length: int = 512) -> TypeEngine[str]:
    """Identifiers (and customer ids) are opaque and only ever matched exactly or grouped:
    PostgreSQL compares and indexes them byte by byte (COLLATE "C"), as SQLite always does,
    not by the database's language rules (with C.UTF-8, loading 900,000 corrections took a
    quarter longer, migrations 0004 and 0005)."""
    return AutoString(length).with_variant(AutoString(length, collation="C"), "postgresql")


class RemediationRun(SQLModel, table=True):
    """One remediation of one input (failed-records file, import-set source, poller rows)."""

    __tablename__ = "remediation_runs"
    __table_args__ = (
        one_of("trigger", RunTrigger, "ck_remediation_runs_trigger"),
        one_of("status", RunStatus, "ck_remediation_runs_status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # Deterministic key (e.g. "impset_x:file_y" or "sha256:<digest>"): a re-run finds its row.
    # Byte-ordered (COLLATE "C" on PostgreSQL, migration 0013): a report's runs are found by
    # a key range (`error_report:<event>:` up to `…;`) that a language collation empties.
    run_key: str = Field(sa_type=_identifier_type(), unique=True)
    trigger: str = Field(max_length=64)  # RunTrigger
    source: str = text_field()
    source_sha256: str | None = Field(default=None, max_length=64)
    generation: int = 1
    # the generation its input's identifiers were traced from (its object's; None: a run
    # written before it was kept, taken as generation - 1): a run raised above its object's
    # generation by lineage (`run_generation`) traced from below it
    input_generation: int | None = None
    status: str = Field(default=RunStatus.RUNNING, max_length=16)
    # the task (inbox item) that started it: dead-lettered, it fails the run (None: the CLI)
    task_id: str | None = Field(default=None, max_length=255, index=True)
    input_rows: int = 0
    valid: int = 0
    corrected: int = 0
    quarantined: int = 0
    by_code: dict[str, object] = json_field()
    # the whole-file repairs its input was read with (a delimiter, header aliases, the event
    # name filled): the run's, said once (a row's changes are in its audit). NULL: a run
    # before migration 0016, or not finished.
    repairs: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # the folder its outputs go to inside the corrected and quarantine prefixes, recorded by
    # its first try (migration 0018): a redo writes there, whatever its caller names now (an
    # error report's folder per object changes when a peer of the same stem is found later,
    # and the redo's check for the earlier try's objects looked in another folder). NULL: a
    # run started before this revision (its next try records its own).
    output_tag: str | None = text_field()
    error: str | None = text_field()
    created_at: datetime = Field(
        default_factory=utcnow, sa_type=DateTime(timezone=True), nullable=False, index=True
    )
    finished_at: datetime | None = optional_time_field()


def _run_fk() -> Column[int]:
    return Column(Integer, ForeignKey("remediation_runs.id", ondelete="CASCADE"), index=True)


class CorrectionAudit(SQLModel, table=True):
    """One correction: source, row, identifier, code, rule, field, before, after."""

    __tablename__ = "correction_audit"
    # Two indexes (migration 0004), each written about once per page by a run's sorted load
    # (service/jobs/store/loads.py, AuditStage): the identifiers we wrote (lineage look-ups)
    # and a run's rows by identifier (a run's rows in order: appended at the index's end; it
    # also serves purges and re-runs by run_id).
    __table_args__ = (Index("ix_correction_audit_run_id_identifier", "run_id", "identifier"),)

    id: int | None = Field(default=None, primary_key=True)
    # Not a foreign key (migration 0004): checked once per run by its only writer, not once
    # per row.
    run_id: int = Field(sa_column=Column(Integer))
    source: str = text_field()
    row_number: int
    identifier: str | None = Field(default=None, sa_type=_identifier_type())
    new_identifier: str | None = Field(default=None, sa_type=_identifier_type(), index=True)
    code: str = Field(max_length=255)
    rule: str = Field(max_length=255)
    field: str = Field(max_length=255)
    before: str | None = text_field()
    after: str | None = text_field()


class QuarantinedRow(SQLModel, table=True):
    """A row that could not be corrected, stored in full (`record`) with its code and reason;
    meter (event name) and customer are copied out of it for filtering."""

    __tablename__ = "quarantined_rows"
    # The dashboard lists rows newest first by id (keyset pages): each filter's index ends
    # with id, so a page is read in order and stops after `limit` rows, never sorted.
    __table_args__ = (
        Index("ix_quarantined_rows_code_id", "code", "id"),
        Index("ix_quarantined_rows_meter_id", "meter", "id"),
        Index("ix_quarantined_rows_customer_id", "customer", "id"),
        # The rows a re-run took (few: the rest hold NULL), by re-run: its rows' origins, the
        # chains of re-runs the purge keeps (migration 0012).
        Index(
            "ix_quarantined_rows_rerun_id",
            "rerun_id",
            postgresql_where=text("rerun_id IS NOT NULL"),
            sqlite_where=text("rerun_id IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    # Not a foreign key (migration 0005): checked once per load transaction by its only
    # writer (service/jobs/store/loads.py, QuarantineStage), not once per row.
    run_id: int = Field(sa_column=Column(Integer, index=True))
    source: str = text_field()
    row_number: int
    identifier: str | None = Field(default=None, sa_type=_identifier_type(), index=True)
    code: str = Field(max_length=255)
    reason: str = text_field()
    meter: str | None = Field(default=None, max_length=255)
    customer: str | None = Field(default=None, sa_type=_identifier_type(255))
    record: dict[str, object] = json_field()
    created_at: datetime = Field(
        default_factory=utcnow, sa_type=DateTime(timezone=True), nullable=False, index=True
    )
    # Set when "re-run with current rules" took the row into a new run (it stays on record).
    rerun_id: int | None = None
    # Index mode: the object version Stripe's connector took the row again from (the customer
    # uploaded the file again, the row fixed or not): billed as it is there, or refused again
    # and quarantined anew. A re-run leaves such a row (migration 0006).
    taken_again: str | None = text_field()


class OutputObject(SQLModel, table=True):
    """A file a run wrote to the bucket, with its lineage."""

    __tablename__ = "output_objects"
    __table_args__ = (one_of("kind", OutputKind, "ck_output_objects_kind"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(sa_column=_run_fk())
    kind: str = Field(max_length=16)  # OutputKind
    key: str = text_field()
    rows: int = 0
    sha256: str = Field(max_length=64)
    generation: int = 1
    source: str = text_field()
    uploaded: bool = False
    created_at: datetime = created_at_field()
