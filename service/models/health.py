"""Heartbeats: each worker and poller records that it is alive and what it does (the digests'
schedule runs in the worker and beats as it)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel

from service.models._types import created_at_field, json_field


class ProcessRole(StrEnum):
    WORKER = "worker"
    POLLER = "poller"


class Heartbeat(SQLModel, table=True):
    """One row per running instance (`instance` = host:pid:random), renewed while it lives.

    The age of the newest heartbeat per role is what /metrics, /api/health and the
    heartbeat-silence alert read; rows of instances gone for long are purged by retention."""

    __tablename__ = "heartbeats"

    id: int | None = Field(default=None, primary_key=True)
    instance: str = Field(max_length=255, unique=True)
    role: str = Field(max_length=16, index=True)  # ProcessRole
    started_at: datetime = created_at_field()
    last_beat_at: datetime = created_at_field()
    detail: dict[str, object] = json_field()
