"""The webhook INSERT's own autocommit connection on PostgreSQL (one per process)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from service.adapters.stripe_events import VerifiedEvent
from service.db import make_engine
from service.errors import InboxUnavailable
from service.intake.pg_writer import postgres_writer
from service.intake.store import StoreResult, store_event
from service.models.inbox import PayloadStyle


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


def _event(event_id: str) -> VerifiedEvent:
    body = f'{{"id": "{event_id}", "object": "v2.core.event"}}'
    return VerifiedEvent(event_id, "v1.billing.meter.no_meter_found", PayloadStyle.THIN,
                         False, body)  # fmt: skip


def _ids(url: str) -> list[str]:
    """What another session sees: only committed rows."""
    other = create_engine(url)
    try:
        with other.connect() as connection:
            rows = connection.execute(text("SELECT event_id FROM inbox_events ORDER BY id"))
            return [row[0] for row in rows]
    finally:
        other.dispose()


def _writer_sessions(url: str) -> int:
    """Sessions of this database whose last statement was the webhook INSERT."""
    other = create_engine(url)
    try:
        with other.connect() as connection:
            query = text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND query LIKE 'INSERT INTO inbox_events%'"
            )
            return int(connection.execute(query).scalar_one())
    finally:
        other.dispose()


def test_one_autocommit_connection_per_process(engine: Engine, pg_url: str) -> None:
    assert store_event(engine, _event("evt_1"), known_type=True) is StoreResult.STORED
    writer = postgres_writer(engine)
    assert writer is not None and writer.pid == os.getpid()
    assert store_event(engine, _event("evt_2"), known_type=False) is StoreResult.IGNORED
    assert postgres_writer(engine) is writer
    assert _ids(pg_url) == ["evt_1", "evt_2"]  # committed without any COMMIT of ours
    assert engine.pool.checkedout() == 0  # detached from the pool, not borrowed
    assert _writer_sessions(pg_url) == 1


def test_duplicate_leaves_the_connection_usable(engine: Engine, pg_url: str) -> None:
    assert store_event(engine, _event("evt_1"), known_type=True) is StoreResult.STORED
    assert store_event(engine, _event("evt_1"), known_type=True) is StoreResult.DUPLICATE
    assert store_event(engine, _event("evt_2"), known_type=True) is StoreResult.STORED
    assert _ids(pg_url) == ["evt_1", "evt_2"]


def test_a_session_ended_by_the_server_is_replaced(engine: Engine, pg_url: str) -> None:
    store_event(engine, _event("evt_1"), known_type=True)
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            ended = connection.execute(
                text(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM"
                    " pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid()"
                    " AND query LIKE 'INSERT INTO inbox_events%') AS ended"
                )
            ).scalar_one()
    finally:
        admin.dispose()
    assert ended == 1
    assert store_event(engine, _event("evt_2"), known_type=True) is StoreResult.STORED
    assert _ids(pg_url) == ["evt_1", "evt_2"]


def test_forked_child_makes_its_own_connection(engine: Engine, pg_url: str) -> None:
    store_event(engine, _event("evt_parent"), known_type=True)
    parent_writer = postgres_writer(engine)
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            stored = store_event(engine, _event("evt_child"), known_type=True)
            writer = postgres_writer(engine)
            mine = writer is not None and writer.pid == os.getpid()
            code = 0 if stored is StoreResult.STORED and mine else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert postgres_writer(engine) is parent_writer
    assert store_event(engine, _event("evt_parent_2"), known_type=True) is StoreResult.STORED
    assert sorted(_ids(pg_url)) == ["evt_child", "evt_parent", "evt_parent_2"]


def test_dispose_closes_the_session(engine: Engine, pg_url: str) -> None:
    store_event(engine, _event("evt_1"), known_type=True)
    assert _writer_sessions(pg_url) == 1
    engine.dispose()
    assert _writer_sessions(pg_url) == 0
    assert store_event(engine, _event("evt_2"), known_type=True) is StoreResult.STORED


def test_unreachable_server_is_unavailable() -> None:
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nothing")
    try:
        with pytest.raises(InboxUnavailable):
            store_event(engine, _event("evt_1"), known_type=True)
    finally:
        engine.dispose()


def test_other_databases_have_no_postgres_writer() -> None:
    assert postgres_writer(make_engine("sqlite://")) is None
