"""The inbox: every verified Stripe event, stored before the 200, processed after."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from service.models._types import created_at_field, optional_time_field, text_field


class PayloadStyle(StrEnum):
    THIN = "thin"  # "object": "v2.core.event", no data: fetch the full event
    SNAPSHOT = "snapshot"  # "object": "event", data.object carried inline


class InboxStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    IGNORED = "ignored"  # unknown event type: stored, never fetched
    DEAD = "dead"  # failed MFX_MAX_ATTEMPTS times; replayable


class InboxEvent(SQLModel, table=True):
    __tablename__ = "inbox_events"
    # One index for claiming (status, then due time); every extra index costs each webhook
    # INSERT (the intake hot path), so there are no others besides the unique event id.
    __table_args__ = (Index("ix_inbox_events_status_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=255, unique=True, nullable=False)
    event_type: str = Field(max_length=255)
    style: str = Field(max_length=16)
    livemode: bool = False
    body: str = Field(sa_column=Column(Text, nullable=False))
    received_at: datetime = created_at_field()
    status: str = Field(default=InboxStatus.PENDING, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime | None = optional_time_field()
    locked_by: str | None = Field(default=None, max_length=255)
    locked_at: datetime | None = optional_time_field()
    last_error: str | None = text_field()
    outcome: str | None = text_field()
    processed_at: datetime | None = optional_time_field()
