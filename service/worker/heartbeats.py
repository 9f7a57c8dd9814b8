"""Heartbeats and the health snapshot: is a worker alive, is the poller, how far behind are we.

Every worker, poller and scheduler instance calls `beat` every few seconds (one upsert of
its own row in `heartbeats`), and `beat_ended` once as it ends; `health_snapshot` reads the
newest beat per role with the inbox backlog, for /metrics, /api/health and the
heartbeat-silence alert.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from service.db.statements import delete_batch
from service.intake.store import unfinished
from service.logs import log_event
from service.models._types import as_utc, table_of, utcnow
from service.models.health import Heartbeat, ProcessRole
from service.models.inbox import InboxStatus

HEARTBEATS = table_of(Heartbeat)
BEAT_EVERY_SECONDS = 10.0  # how often a live process beats (the silence alert waits far longer)


def new_instance_id() -> str:
    """`host:pid:random`: unique per process start (a restarted process is a new instance)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def beat(
    target: Engine | Connection,
    instance: str,
    role: str,
    detail: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> None:
    """Record that `instance` (of `role`: worker, poller, scheduler) is alive now.

    The poller calls this at each pass and as it waits for the next, the worker from its
    heartbeat thread. One upsert of the instance's own row: its first beat sets `started_at`,
    later ones move `last_beat_at` and replace `detail` (what it is doing, JSON). It never
    replaces the last beat of the instance (`beat_ended`): the worker's heartbeat thread,
    stuck past the 2 s a stop waits for it (a database lock, a starved thread), wrote its
    beat after that one, and the process was shown running again, then silent."""
    _record(target, instance, _values(role, detail, now), over_ended=False)


class Ended(StrEnum):
    """How a process's last beat (`beat_ended`, its `doing`) says it ended."""

    EXITED = "exited"  # it ran once and exited: `poll --once`, `poll --retry`, `worker --once`
    STOPPED = "stopped"  # SIGTERM/SIGINT: `meterfix poll`, `meterfix worker`, the worker's poller
    # a worker process ended for its supervisor to start a fresh one (an item overran its
    # time limit): the role runs on, this instance does not
    RESTARTED = "restarted"


def beat_ended(
    engine: Engine, instance: str, role: str, ended: Ended, detail: Mapping[str, str] | None = None
) -> None:
    """The last beat of a process that ends: `{"doing": ended, **detail}`. Without it the
    row kept what the process was last doing, and /api/health and the overview showed it
    running ("1 s ago") until MFX_HEARTBEAT_SILENCE passed, then silent as if it hung. No
    beat follows, so past the limit the silence alert says none runs, as it should. A
    failing beat is logged, never raised: the process ends either way."""
    values = _values(role, {"doing": ended.value, **(detail or {})}, None)
    try:
        _record(engine, instance, values, over_ended=True)
    except Exception as exc:  # loop edge: the database may be what stopped the process
        log_event(f"{role}.heartbeat_failed", level=logging.WARNING, reason=type(exc).__name__)


def _values(role: str, detail: Mapping[str, Any] | None, now: datetime | None) -> dict[str, Any]:
    return {
        "role": ProcessRole(role).value,
        "last_beat_at": now or utcnow(),
        "detail": dict(detail or {}),
    }


def _record(
    target: Engine | Connection, instance: str, values: dict[str, Any], *, over_ended: bool
) -> None:
    if isinstance(target, Engine):
        with target.begin() as connection:
            _upsert(connection, instance, values, over_ended)
    else:
        _upsert(target, instance, values, over_ended)


def _not_ended() -> ColumnElement[bool]:
    """The row's last beat is not an ended one: a conditional write, so that the database
    decides on the row as it is when the write takes it (a late beat finds it ended)."""
    doing = HEARTBEATS.c.detail["doing"].as_string()
    return or_(doing.is_(None), doing.not_in([ended.value for ended in Ended]))


def _upsert(
    connection: Connection, instance: str, values: dict[str, Any], over_ended: bool
) -> None:
    only_while = None if over_ended else _not_ended()
    dialect = connection.dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = (postgresql if dialect == "postgresql" else sqlite).insert(HEARTBEATS)
        statement = insert.values(
            instance=instance, started_at=values["last_beat_at"], **values
        ).on_conflict_do_update(index_elements=["instance"], set_=values, where=only_while)
        connection.execute(statement)
        return
    # another engine: update first, insert the first beat (none beside a row that ended)
    mine = HEARTBEATS.c.instance == instance
    ours = mine if only_while is None else mine & only_while
    updated = connection.execute(update(HEARTBEATS).where(ours).values(**values))
    found = (
        updated.rowcount or connection.execute(select(HEARTBEATS.c.instance).where(mine)).first()
    )
    if not found:
        connection.execute(
            HEARTBEATS.insert().values(
                instance=instance, started_at=values["last_beat_at"], **values
            )
        )


@dataclass(frozen=True)
class RoleBeat:
    """The newest heartbeat of one role."""

    role: str
    instance: str
    started_at: datetime
    last_beat_at: datetime
    age_seconds: float
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "started_at": self.started_at.isoformat(),
            "last_beat_at": self.last_beat_at.isoformat(),
            "age_seconds": round(self.age_seconds, 3),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class HealthSnapshot:
    """What /metrics and /api/health show. An age is None when that role never beat
    (or no item is waiting). `backlog_items` counts unfinished inbox items: pending (due or
    waiting for a retry) plus processing."""

    now: datetime
    beats: dict[str, RoleBeat] = field(default_factory=dict)  # role -> newest beat
    pending_items: int = 0
    processing_items: int = 0
    oldest_pending_age_seconds: float | None = None

    @property
    def backlog_items(self) -> int:
        return self.pending_items + self.processing_items

    def heartbeat_age(self, role: str) -> float | None:
        newest = self.beats.get(role)
        return None if newest is None else newest.age_seconds

    @property
    def worker_heartbeat_age_seconds(self) -> float | None:
        return self.heartbeat_age(ProcessRole.WORKER)

    @property
    def poller_heartbeat_age_seconds(self) -> float | None:
        return self.heartbeat_age(ProcessRole.POLLER)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (for /api/health): one entry per role, None when it never beat."""
        return {
            "now": self.now.isoformat(),
            "heartbeats": {
                role.value: (b.as_dict() if (b := self.beats.get(role)) else None)
                for role in ProcessRole
            },
            "worker_heartbeat_age_seconds": _rounded(self.worker_heartbeat_age_seconds),
            "poller_heartbeat_age_seconds": _rounded(self.poller_heartbeat_age_seconds),
            "backlog_items": self.backlog_items,
            "pending_items": self.pending_items,
            "processing_items": self.processing_items,
            "oldest_pending_age_seconds": _rounded(self.oldest_pending_age_seconds),
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def health_snapshot(target: Engine | Connection, now: datetime | None = None) -> HealthSnapshot:
    """Newest heartbeat per role, inbox backlog and the age of the oldest unfinished item."""
    now = now or utcnow()
    if isinstance(target, Engine):
        with target.connect() as connection:
            return _snapshot(connection, now)
    return _snapshot(target, now)


def _snapshot(connection: Connection, now: datetime) -> HealthSnapshot:
    beats: dict[str, RoleBeat] = {}
    for role in ProcessRole:
        newest = _newest_beat(connection, role, now)
        if newest is not None:
            beats[role.value] = newest
    counts, oldest = unfinished(connection)
    return HealthSnapshot(
        now=now,
        beats=beats,
        pending_items=int(counts.get(InboxStatus.PENDING.value, 0)),
        processing_items=int(counts.get(InboxStatus.PROCESSING.value, 0)),
        oldest_pending_age_seconds=_age(now, oldest),
    )


def _newest_beat(connection: Connection, role: ProcessRole, now: datetime) -> RoleBeat | None:
    beats = beats_of(connection, role, now, limit=1)
    return beats[0] if beats else None


def beats_of(
    connection: Connection,
    role: str,
    now: datetime,
    *,
    since: datetime | None = None,
    limit: int = 100,
) -> list[RoleBeat]:
    """The heartbeats of `role`'s instances (beaten at or after `since`), newest first."""
    query = select(
        HEARTBEATS.c.instance,
        HEARTBEATS.c.started_at,
        HEARTBEATS.c.last_beat_at,
        HEARTBEATS.c.detail,
    ).where(HEARTBEATS.c.role == ProcessRole(role).value)
    if since is not None:
        query = query.where(HEARTBEATS.c.last_beat_at >= since)
    query = query.order_by(HEARTBEATS.c.last_beat_at.desc()).limit(limit)
    return [_role_beat(row, role, now) for row in connection.execute(query)]


def _role_beat(row: Any, role: str, now: datetime) -> RoleBeat:
    started, last = as_utc(row.started_at), as_utc(row.last_beat_at)
    assert started is not None and last is not None  # NOT NULL columns
    return RoleBeat(
        role=ProcessRole(role).value,
        instance=row.instance,
        started_at=started,
        last_beat_at=last,
        age_seconds=_age(now, last) or 0.0,
        detail=dict(row.detail or {}),
    )


def _age(now: datetime, then: datetime | None) -> float | None:
    """Seconds since `then`; never negative (another host's clock may run a little ahead)."""
    if then is None:
        return None
    return max(0.0, (now - then).total_seconds())


def newest_beats(connection: Connection, roles: Sequence[str]) -> dict[str, datetime]:
    """The newest heartbeat time of each role that has one."""
    newest = func.max(HEARTBEATS.c.last_beat_at).label("newest")
    query = (
        select(HEARTBEATS.c.role, newest)
        .where(HEARTBEATS.c.role.in_(list(roles)))
        .group_by(HEARTBEATS.c.role)
    )
    return {str(row.role): row.newest for row in connection.execute(query)}


def purge_heartbeats(engine: Engine, before: datetime, batch: int) -> int:
    """Retention: delete up to `batch` heartbeats of instances silent since before `before`
    (a process that stopped leaves its row; a running one beats every few seconds)."""
    return delete_batch(engine, HEARTBEATS, HEARTBEATS.c.last_beat_at < before, batch)
