"""Alert records: what needs a person (digests and notifications read them)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from service.models._types import created_at_field, json_field, optional_time_field, text_field


class Alert(SQLModel, table=True):
    __tablename__ = "alerts"

    id: int | None = Field(default=None, primary_key=True)
    # Deterministic key so re-processing the same event raises the same alert only once.
    alert_key: str = Field(max_length=512, unique=True)
    severity: str = Field(max_length=16)  # info|warning|critical
    kind: str = Field(max_length=64)
    subject: str = text_field()
    message: str = text_field()
    detail: dict[str, object] = json_field()
    created_at: datetime = created_at_field()
    notified_at: datetime | None = optional_time_field()
