"""Column helpers shared by the table modules.

Timestamps are stored timezone-aware on PostgreSQL; SQLite gives them back naive, so read
them through `as_utc`. Every timestamp the service writes is UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Column, DateTime, Table, Text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def latest(moments: Iterable[tuple[str, datetime | None]]) -> dict[str, datetime]:
    """key -> the latest of its moments (a timestamp column read row by row: aggregated by
    SQLite, it comes back as text)."""
    found: dict[str, datetime] = {}
    for key, moment in moments:
        if moment is not None and (key not in found or moment > found[key]):
            found[key] = moment
    return found


def created_at_field() -> Any:
    return Field(default_factory=utcnow, sa_type=DateTime(timezone=True), nullable=False)


def required_time_field() -> Any:
    return Field(sa_type=DateTime(timezone=True), nullable=False)


def optional_time_field(index: bool = False) -> Any:
    return Field(default=None, sa_type=DateTime(timezone=True), nullable=True, index=index)


def json_field(default_factory: Any = dict) -> Any:
    return Field(default_factory=default_factory, sa_column=Column(JSON, nullable=False))


def text_field() -> Any:
    return Field(default=None, sa_column=Column(Text, nullable=True))


def one_of(column: str, values: type[StrEnum], name: str) -> CheckConstraint:
    """The database refuses a value of `column` outside the enum (migration 0003 adds these)."""
    allowed = ", ".join(f"'{value}'" for value in values)
    return CheckConstraint(f'"{column}" IN ({allowed})', name=name)


def table_of(model: type[SQLModel]) -> Table:
    """A table model's Core table, typed: SQLModel sets `__table__` on the class at runtime
    only, so this is the one place that reads it (Core queries use it on the hot paths)."""
    table = model.__dict__["__table__"]
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not a table model")
    return table
