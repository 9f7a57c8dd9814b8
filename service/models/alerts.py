"""Alerts (what needs a person), their critical messages, admin actions (who touched what) and
digest runs."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, ForeignKey, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

from service.models._types import (
    created_at_field,
    json_field,
    one_of,
    optional_time_field,
    required_time_field,
    text_field,
)


class AlertSeverity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Alert(SQLModel, table=True):
    """One incident. The same incident raised again (same `alert_key`) is the same row with a
    higher `count`; a resolved alert raised again opens again."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_status_last_seen", "status", "last_seen_at"),)

    id: int | None = Field(default=None, primary_key=True)
    # Deterministic key so re-processing the same event raises the same alert only once.
    alert_key: str = Field(max_length=512, unique=True)
    severity: str = Field(max_length=16, index=True)  # AlertSeverity
    status: str = Field(default=AlertStatus.OPEN, max_length=16)  # AlertStatus
    kind: str = Field(max_length=64)
    subject: str = text_field()
    message: str = text_field()
    meter: str | None = Field(default=None, max_length=255)
    code: str | None = Field(default=None, max_length=255)
    customer: str | None = Field(default=None, max_length=255)
    count: int = 1  # times this incident was raised
    rows: int = 0  # rows concerned, when the incident is about rows
    # Links to what the alert is about: import_set, run (id), objects (keys), quarantine
    # (key), event (id). The dashboard and messages turn them into URLs.
    links: dict[str, object] = json_field()
    detail: dict[str, object] = json_field()
    created_at: datetime = created_at_field()
    last_seen_at: datetime = created_at_field()
    acknowledged_at: datetime | None = optional_time_field()
    resolved_at: datetime | None = optional_time_field()
    # Critical alerts are sent at once: when the "raised" message went out (None: due), and
    # when the "resolved" follow-up went out.
    notified_at: datetime | None = optional_time_field()
    resolved_notified_at: datetime | None = optional_time_field()


class MessageStatus(StrEnum):
    """Where one critical message (an alert's "raised" or "resolved") stands on one channel."""

    SENDING = "sending"  # claimed: being sent, or its sender stopped mid-send
    SENT = "sent"
    FAILED = "failed"  # not delivered: the next attempt claims it again
    GIVEN_UP = "given_up"  # refused for good: not tried again
    # its sender stopped mid-send (a claim older than the send's deadline): it may have
    # arrived, so it is never sent again
    UNSURE = "unsure"


class CriticalMessage(SQLModel, table=True):
    """One critical message on one channel: claimed before it is sent, marked after, so that
    two senders never both send it and a sender stopping between channels leaves each
    channel's outcome (service.notify.critical). One row per (alert, phase, channel): a new
    incident of the alert claims it again (`incident_at`)."""

    __tablename__ = "critical_messages"
    __table_args__ = (
        UniqueConstraint("alert_id", "phase", "channel", name="uq_critical_messages_message"),
        one_of("status", MessageStatus, "ck_critical_messages_status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(
        sa_column=Column(Integer, ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False)
    )
    incident_at: datetime = required_time_field()  # the alert's created_at: which incident
    phase: str = Field(max_length=16)  # raised|resolved
    channel: str = Field(max_length=16)  # slack|email
    status: str = Field(default=MessageStatus.SENDING, max_length=16)
    claimed_by: str = Field(max_length=64)  # the sending pass's token
    claimed_at: datetime = required_time_field()
    finished_at: datetime | None = optional_time_field()
    last_error: str | None = text_field()
    # times a claim left `sending` by a sender that stopped mid-send was taken over and sent
    # again (service.notify.message_store.MAX_RESENDS)
    resends: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class AdminActionName(StrEnum):
    ACKNOWLEDGE = "acknowledge"  # an alert
    RESOLVE = "resolve"  # an alert
    REPLAY = "replay"  # an inbox event or task
    RERUN = "rerun"  # quarantined rows, through the current rules
    RETRY = "retry"  # a given-up poller object (`meterfix poll --retry`)


class AdminAction(SQLModel, table=True):
    """Every admin action (acknowledge, resolve, replay, re-run): when, from where, on what."""

    __tablename__ = "admin_actions"
    __table_args__ = (
        Index("ix_admin_actions_target", "target_type", "target_id"),
        one_of("action", AdminActionName, "ck_admin_actions_action"),
    )

    id: int | None = Field(default=None, primary_key=True)
    action: str = Field(max_length=32)  # AdminActionName
    target_type: str = Field(max_length=32)  # alert|event|quarantine
    target_id: str = Field(max_length=512)
    source_address: str = Field(default="", max_length=255)
    via: str = Field(default="", max_length=16)  # api|dashboard|cli
    detail: dict[str, object] = json_field()
    created_at: datetime = created_at_field()


class DigestStatus(StrEnum):
    SENDING = "sending"  # claimed; a crash leaves it here and a restart sends it again
    SENT = "sent"
    EMPTY = "empty"  # nothing happened in the window: nothing sent
    FAILED = "failed"  # retried with backoff; last_error says why
    UNSURE = "unsure"  # sent twice without an answer: it may have arrived, not sent again


class DigestRun(SQLModel, table=True):
    """One digest window on one channel: exactly one row, so a window is sent once."""

    __tablename__ = "digest_runs"
    __table_args__ = (
        UniqueConstraint("channel", "window_start", name="uq_digest_runs_channel_window"),
    )

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)  # slack|email
    window_start: datetime = required_time_field()
    window_end: datetime = required_time_field()
    status: str = Field(default=DigestStatus.SENDING, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime | None = optional_time_field()
    claimed_by: str | None = Field(default=None, max_length=255)
    last_error: str | None = text_field()
    summary: dict[str, object] = json_field()
    created_at: datetime = created_at_field()
    sent_at: datetime | None = optional_time_field()
