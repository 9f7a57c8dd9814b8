"""What the bundled poller has seen in the bucket, and identifier -> (object, row)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, ForeignKey, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

from service.models._types import created_at_field, optional_time_field, text_field

OBJECT_KEY_CHARS = 1024  # S3 keys run to 1,024 bytes; a `file://` path may be longer


class ObjectStatus(StrEnum):
    SEEN = "seen"
    IMPORTED = "imported"  # every valid row sent; failed rows (if any) handed to remediation
    INDEXED = "indexed"  # index mode: identifiers recorded, nothing sent
    FAILED = "failed"  # whole-file failure (unreadable); see error
    SKIPPED = "skipped"  # empty, too old, or not a usage file


class BucketObject(SQLModel, table=True):
    __tablename__ = "bucket_objects"
    __table_args__ = (UniqueConstraint("key", "etag", name="uq_bucket_objects_key_etag"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=OBJECT_KEY_CHARS, index=True)
    etag: str = Field(max_length=255)
    size: int = Field(default=0, sa_type=BigInteger)
    last_modified: datetime | None = optional_time_field()
    status: str = Field(default=ObjectStatus.SEEN, max_length=16, index=True)
    rows: int = 0
    sent: int = 0
    failed: int = 0
    attempts: int = 0  # passes that took it
    # Resume point: batches 0..acked_batches-1 were all acknowledged by Stripe (the last one
    # with no gap before it); a later pass sends from there, never from row 1 again.
    acked_batches: int = 0
    first_sent_at: datetime | None = optional_time_field()  # first batch of this object sent
    failing_since: datetime | None = optional_time_field()  # first failure of the current run
    next_attempt_at: datetime | None = optional_time_field()  # failing passes back off
    # a version ending mid-line (still being written?): the poller's clock when a listing
    # first found it as it is (size, LastModified); read once a listing SETTLE later still does
    settling_since: datetime | None = optional_time_field()
    import_set_id: str | None = Field(default=None, max_length=255)
    error: str | None = text_field()
    first_seen: datetime = created_at_field()
    processed_at: datetime | None = optional_time_field()


class ImportedRow(SQLModel, table=True):
    __tablename__ = "imported_rows"
    __table_args__ = (
        UniqueConstraint("identifier", "object_key", name="uq_imported_rows_identifier_object"),
    )

    id: int | None = Field(default=None, primary_key=True)
    identifier: str = Field(max_length=512, index=True)
    object_key: str = Field(max_length=OBJECT_KEY_CHARS)
    etag: str = Field(max_length=255)
    row_number: int
    event_name: str | None = Field(default=None, max_length=255)
    timestamp: int | None = Field(default=None, sa_type=BigInteger)
    sent: bool = False
    # remediation.rowdigest of the row as this version held it (None: recorded
    # before migration 0007)
    content: int | None = Field(default=None, sa_type=BigInteger)
    # the latest version of the object that held the identifier too, when not the first
    # (migration 0008: Stripe's connector takes every version whole, index mode)
    latest_etag: str | None = Field(default=None, max_length=255)
    # the latest later version of the object that sent the identifier again, its row there
    # and remediation.rowdigest of what it sent, when the first one sent it too (migration
    # 0019: the day's file rewritten in place with a refused row fixed by hand; NULL: none did)
    resent_etag: str | None = Field(default=None, max_length=255)
    resent_row: int | None = None
    resent_content: int | None = Field(default=None, sa_type=BigInteger)


class PollerBatch(SQLModel, table=True):
    """One batch (<= 100 events) of one object version: when it was first sent, and when
    Stripe acknowledged it. Nothing is re-sent past Stripe's dedupe window (23 h here)."""

    __tablename__ = "poller_batches"
    __table_args__ = (
        UniqueConstraint("object_id", "batch_number", name="uq_poller_batches_object_batch"),
    )

    id: int | None = Field(default=None, primary_key=True)
    object_id: int = Field(
        sa_column=Column(
            Integer,
            ForeignKey("bucket_objects.id", ondelete="CASCADE"),
            index=True,
            nullable=False,
        )
    )
    batch_number: int
    first_row: int = 0
    rows: int = 0
    first_sent_at: datetime = created_at_field()
    acked_at: datetime | None = optional_time_field()
