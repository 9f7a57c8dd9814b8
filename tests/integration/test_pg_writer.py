"""The webhook INSERT's own autocommit connection on PostgreSQL (one per process).

The database is shared: other test processes store webhooks in schemas of their own at the same
time, so sessions are told apart by an application name of this test's (`tagged`), and the
`bystander` fixture holds such another process's session open, so a count that is not told apart
fails every time, not once in a while."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, create_engine, make_url, text

from service.adapters.stripe_events import VerifiedEvent
from service.db import make_engine
from service.errors import InboxUnavailable
from service.intake.pg_writer import postgres_writer
from service.intake.store import StoreResult, store_event
from service.models.inbox import PayloadStyle


@pytest.fixture
def tagged(pg_url: str) -> str:
    """`pg_url` with an application name of this test's own."""
    name = f"mfx_pg_writer_{uuid.uuid4().hex[:12]}"
    return make_url(pg_url).update_query_dict({"application_name": name}).render_as_string(False)


@pytest.fixture
def engine(tagged: str, bystander: Connection) -> Iterator[Engine]:
    engine = make_engine(tagged)
    yield engine
    engine.dispose()


@pytest.fixture
def bystander(pg_url: str) -> Iterator[Connection]:
    """Another process's session whose last statement was a webhook INSERT (its transaction
    left open, then rolled back: the table holds only this test's rows)."""
    other = create_engine(pg_url)
    with other.connect() as connection:
        connection.execute(
            text(
                "INSERT INTO inbox_events (event_id, event_type, style, livemode, body,"
                " received_at, status, attempts)"
                " VALUES ('evt_bystander', 't', 'thin', false, '{}', now(), 'pending', 0)"
            )
        )
        yield connection
        connection.rollback()
    other.dispose()


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


_WRITERS = (
    "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND application_name = :name AND query LIKE 'INSERT INTO inbox_events%'"
)


def _writer_sessions(url: str) -> int:
    """This test's sessions whose last statement was the webhook INSERT."""
    other = create_engine(url)
    try:
        with other.connect() as connection:
            name = make_url(url).query["application_name"]
            return int(
                connection.execute(text(f"SELECT count(*) {_WRITERS}"), {"name": name}).scalar_one()
            )
    finally:
        other.dispose()


def test_one_autocommit_connection_per_process(engine: Engine, pg_url: str, tagged: str) -> None:
    assert store_event(engine, _event("evt_1"), known_type=True) is StoreResult.STORED
    writer = postgres_writer(engine)
    assert writer is not None and writer.pid == os.getpid()
    assert store_event(engine, _event("evt_2"), known_type=False) is StoreResult.IGNORED
    assert postgres_writer(engine) is writer
    assert _ids(pg_url) == ["evt_1", "evt_2"]  # committed without any COMMIT of ours
    assert engine.pool.checkedout() == 0  # detached from the pool, not borrowed
    assert _writer_sessions(tagged) == 1


def test_duplicate_leaves_the_connection_usable(engine: Engine, pg_url: str) -> None:
    assert store_event(engine, _event("evt_1"), known_type=True) is StoreResult.STORED
    assert store_event(engine, _event("evt_1"), known_type=True) is StoreResult.DUPLICATE
    assert store_event(engine, _event("evt_2"), known_type=True) is StoreResult.STORED
    assert _ids(pg_url) == ["evt_1", "evt_2"]


def test_a_session_ended_by_the_server_is_replaced(
    engine: Engine, pg_url: str, tagged: str
) -> None:
    store_event(engine, _event("evt_1"), known_type=True)
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            ended = connection.execute(
                text(
                    f"SELECT count(*) FROM (SELECT pg_terminate_backend(pid) {_WRITERS}) AS ended"
                ),
                {"name": make_url(tagged).query["application_name"]},
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


def test_dispose_closes_the_session(engine: Engine, pg_url: str, tagged: str) -> None:
    store_event(engine, _event("evt_1"), known_type=True)
    assert _writer_sessions(tagged) == 1
    engine.dispose()
    assert _writer_sessions(tagged) == 0
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
