"""The webhook INSERT's own SQLite connection (one per process) and WAL checkpoints."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from service.adapters.stripe_events import VerifiedEvent
from service.db import WAL_AUTOCHECKPOINT_PAGES, checkpoint_wal, make_engine, sqlite_writer, upgrade
from service.inbox import StoreResult, store_event
from service.models.inbox import PayloadStyle


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
