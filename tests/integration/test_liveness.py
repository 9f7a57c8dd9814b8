"""Heartbeats and the health snapshot on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from service.db import make_engine
from service.models import InboxEvent, InboxStatus
from service.worker.heartbeats import beat, health_snapshot

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _event(n: int, status: InboxStatus, received: datetime) -> InboxEvent:
    return InboxEvent(
        event_id=f"evt_{n}", event_type="t", style="thin", body="{}", status=status,
        received_at=received,
    )  # fmt: skip


def test_snapshot_reads_newest_beat_per_role_and_backlog(db_url: str) -> None:
    engine = make_engine(db_url)
    beat(engine, "host:1:a", "worker", {"item": None}, now=T0)
    beat(engine, "host:2:b", "worker", {"item": "evt_1"}, now=T0 + timedelta(seconds=5))
    beat(engine, "host:1:a", "worker", {"item": "evt_2"}, now=T0 + timedelta(seconds=8))
    beat(engine, "host:3:c", "poller", {"pass": 4}, now=T0 + timedelta(seconds=2))
    with Session(engine) as session:
        session.add(_event(1, InboxStatus.PENDING, T0 - timedelta(seconds=50)))
        session.add(_event(2, InboxStatus.PROCESSING, T0 - timedelta(seconds=70)))
        session.add(_event(3, InboxStatus.DONE, T0 - timedelta(seconds=900)))
        session.add(_event(4, InboxStatus.DEAD, T0 - timedelta(seconds=900)))
        session.commit()
    snapshot = health_snapshot(engine, now=T0 + timedelta(seconds=10))
    engine.dispose()
    worker = snapshot.beats["worker"]
    assert (worker.instance, worker.detail, worker.age_seconds) == (
        "host:1:a",
        {"item": "evt_2"},
        2,
    )
    assert worker.started_at == T0  # the first beat of the instance
    assert snapshot.worker_heartbeat_age_seconds == 2
    assert snapshot.poller_heartbeat_age_seconds == 8
    assert (snapshot.pending_items, snapshot.processing_items, snapshot.backlog_items) == (1, 1, 2)
    assert snapshot.oldest_pending_age_seconds == 80
    as_json = snapshot.as_dict()
    # the roles that beat: the digests' schedule runs in the worker (a "scheduler": null,
    # never written, read as a scheduler that is not running)
    assert set(as_json["heartbeats"]) == {"worker", "poller"}
    assert as_json["heartbeats"]["poller"]["detail"] == {"pass": 4}
    assert as_json["backlog_items"] == 2 and as_json["oldest_pending_age_seconds"] == 80


def test_snapshot_of_an_empty_database(db_url: str) -> None:
    engine = make_engine(db_url)
    snapshot = health_snapshot(engine)
    engine.dispose()
    assert snapshot.beats == {} and snapshot.backlog_items == 0
    assert snapshot.worker_heartbeat_age_seconds is None
    assert snapshot.oldest_pending_age_seconds is None
