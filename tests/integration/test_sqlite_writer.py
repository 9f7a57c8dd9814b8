"""The webhook INSERT's own SQLite connection (one per process) and WAL checkpoints."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import select

from service.adapters.stripe_events import VerifiedEvent
from service.config import Settings
from service.db import (
    WAL_AUTOCHECKPOINT_PAGES,
    checkpoint_wal,
    make_engine,
    session_scope,
)
from service.db.migrate import upgrade
from service.intake.sqlite_writer import sqlite_writer
from service.intake.store import StoreResult, sqlite_datetime, store_event
from service.models._types import as_utc, utcnow
from service.models.inbox import InboxEvent, PayloadStyle
from service.runtime import Runtime


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'meterfix.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _event(event_id: str) -> VerifiedEvent:
    body = f'{{"id": "{event_id}", "object": "v2.core.event"}}'
    return VerifiedEvent(event_id, "v1.billing.meter.error_report_triggered", PayloadStyle.THIN,
                         False, body)  # fmt: skip


def _count(engine: Engine, database: str | None = None) -> int:
    other = sqlite3.connect(database or str(engine.url.database))  # another connection
    try:
        return int(other.execute("SELECT COUNT(*) FROM inbox_events").fetchone()[0])
    finally:
        other.close()


def test_one_writer_per_process_reused_and_committed(engine: Engine) -> None:
    assert store_event(engine, _event("evt_1"), known_type=True) is StoreResult.STORED
    writer = sqlite_writer(engine)
    assert writer is not None and writer.pid == os.getpid()
    assert store_event(engine, _event("evt_2"), known_type=True) is StoreResult.STORED
    assert sqlite_writer(engine) is writer
    assert _count(engine) == 2


def test_duplicate_leaves_the_writer_usable(engine: Engine) -> None:
    assert store_event(engine, _event("evt_1"), known_type=True) is StoreResult.STORED
    assert store_event(engine, _event("evt_1"), known_type=True) is StoreResult.DUPLICATE
    assert store_event(engine, _event("evt_2"), known_type=False) is StoreResult.IGNORED
    writer = sqlite_writer(engine)
    assert writer is not None and not writer.connection.in_transaction
    assert _count(engine) == 2


def test_dispose_closes_the_writer(engine: Engine) -> None:
    store_event(engine, _event("evt_1"), known_type=True)
    writer = sqlite_writer(engine)
    assert writer is not None
    engine.dispose()
    with pytest.raises(sqlite3.ProgrammingError):
        writer.connection.execute("SELECT 1")
    assert store_event(engine, _event("evt_2"), known_type=True) is StoreResult.STORED
    assert sqlite_writer(engine) is not writer


def test_forked_child_opens_its_own_writer(engine: Engine) -> None:
    store_event(engine, _event("evt_parent"), known_type=True)
    parent_writer = sqlite_writer(engine)
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            stored = store_event(engine, _event("evt_child"), known_type=True)
            writer = sqlite_writer(engine)
            mine = writer is not None and writer.pid == os.getpid()
            code = 0 if stored is StoreResult.STORED and mine else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sqlite_writer(engine) is parent_writer
    assert store_event(engine, _event("evt_parent_2"), known_type=True) is StoreResult.STORED
    assert _count(engine) == 3


def test_memory_databases_use_the_pool() -> None:
    assert sqlite_writer(make_engine("sqlite://")) is None


def test_wal_autocheckpoint_stays_on_and_the_worker_checkpoint_copies_the_wal(
    engine: Engine, tmp_path: Path
) -> None:
    with engine.connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert pages == WAL_AUTOCHECKPOINT_PAGES > 0  # the bound when no worker runs
    for n in range(20):
        store_event(engine, _event(f"evt_{n}"), known_type=True)
    assert _main_file_rows(engine, tmp_path / "before.db") == 0  # all still in the WAL
    checkpoint_wal(engine)
    assert _main_file_rows(engine, tmp_path / "after.db") == 20


def _main_file_rows(engine: Engine, copy: Path) -> int:
    """Rows in the database file alone, without its WAL."""
    shutil.copyfile(str(engine.url.database), copy)
    return _count(engine, str(copy))


def test_received_at_is_written_as_sqlalchemy_writes_datetimes(engine: Engine) -> None:
    """The hot path formats the timestamp itself; the ORM must read back the same instant."""
    before = utcnow().replace(tzinfo=None)
    store_event(engine, _event("evt_stamp"), known_type=True)
    with session_scope(engine) as session:
        row = session.exec(select(InboxEvent).where(InboxEvent.event_id == "evt_stamp")).one()
    received = as_utc(row.received_at)
    assert received is not None and received.tzinfo is not None
    assert before <= received.replace(tzinfo=None) <= utcnow().replace(tzinfo=None)
    assert row.next_attempt_at is not None and as_utc(row.next_attempt_at) == received
    raw = sqlite3.connect(str(engine.url.database)).execute(
        "SELECT received_at FROM inbox_events WHERE event_id = 'evt_stamp'"
    )
    text = raw.fetchone()[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", text), text


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC), "2026-11-25 12:00:00.000000"),
        (datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "2026-01-02 03:04:05.000006"),
    ],
)
def test_sqlite_datetime_keeps_microseconds(moment: datetime, expected: str) -> None:
    assert sqlite_datetime(moment) == expected == moment.strftime("%Y-%m-%d %H:%M:%S.%f")


@pytest.mark.parametrize(("level", "pragma"), [("normal", 1), ("full", 2)])
def test_synchronous_level_applies_to_pool_and_writer(
    tmp_path: Path, level: str, pragma: int
) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    upgrade(url)
    engine = make_engine(url, synchronous=level)
    try:
        store_event(engine, _event("evt_sync"), known_type=True)
        writer = sqlite_writer(engine)
        assert writer is not None
        assert writer.connection.execute("PRAGMA synchronous").fetchone()[0] == pragma
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == pragma
    finally:
        engine.dispose()


def test_unknown_synchronous_level_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        make_engine(f"sqlite:///{tmp_path / 'x.db'}", synchronous="off")


@pytest.mark.parametrize(("raw", "pragma"), [("FULL", 2), (" normal ", 1)])
def test_synchronous_setting_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, raw: str, pragma: int
) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("MFX_SQLITE_SYNCHRONOUS", raw)
    runtime = Runtime(Settings(_env_file=None))  # type: ignore[call-arg]
    assert runtime.settings.mfx_sqlite_synchronous == raw.strip().lower()
    try:
        with runtime.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == pragma
    finally:
        runtime.close()


def test_bad_synchronous_setting_names_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFX_SQLITE_SYNCHRONOUS", "extra")
    with pytest.raises(ValidationError, match="'normal' or 'full'"):
        Settings(_env_file=None)  # type: ignore[call-arg]
