"""Migrations at their edges: a database holding rows upgraded from an older revision, an
upgrade stopped midway and run again, two `meterfix db upgrade` at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text

from service.db import make_engine
from service.db.migrate import MIGRATIONS_DIR, upgrade
from tests.conftest import DB_PARAMS, PG_URL, _pg_schema_url
from tests.unit.test_migrations import _empty_database

MFX = str(Path(sys.executable).parent / "meterfix")

RUN_7 = (
    "INSERT INTO remediation_runs (id, run_key, trigger, source, generation, status,"
    " input_rows, valid, corrected, quarantined, by_code, created_at) VALUES (7, 'k', 'cli',"
    " 's', 1, 'done', 3, 0, 1, 1, '{}', CURRENT_TIMESTAMP)"
)
# One row of each table that points at run 7 or at report 3, as revision 0002 holds them.
ROWS_0002 = (
    "INSERT INTO output_objects (run_id, kind, key, rows, sha256, generation, source,"
    " uploaded, created_at) VALUES (7, 'corrected', 'corrected/a.csv', 1, 'ab', 1, 's', true,"
    " CURRENT_TIMESTAMP)",
    "INSERT INTO correction_audit (run_id, source, row_number, identifier, new_identifier,"
    " code, rule, field, before, after) VALUES (7, 's', 1, 'a', 'a-mfx1', 'c', 'r', 'f', '1',"
    " '2')",
    "INSERT INTO quarantined_rows (run_id, source, row_number, identifier, code, reason,"
    " meter, customer, record, created_at) VALUES (7, 's', 2, 'b', 'c', 'why', 'm', 'cus_1',"
    " '{\"value\": 12345678901234567.25}', CURRENT_TIMESTAMP)",
    "INSERT INTO error_reports (id, event_id, event_type, livemode, error_count, status,"
    " detail, created_at) VALUES (3, 'evt_1', 'v1.billing.meter.error_report_triggered',"
    " false, 1, 'recorded', '{}', CURRENT_TIMESTAMP)",
    "INSERT INTO error_samples (report_id, code, message, identifier)"
    " VALUES (3, 'meter_event_customer_not_found', 'no customer', 'a')",
)
KEPT = {
    "SELECT run_id, key FROM output_objects": [(7, "corrected/a.csv")],
    "SELECT run_id, new_identifier FROM correction_audit": [(7, "a-mfx1")],
    "SELECT run_id, identifier, customer FROM quarantined_rows": [(7, "b", "cus_1")],
    "SELECT report_id, code FROM error_samples": [(3, "meter_event_customer_not_found")],
}


def _at_0002_with_rows(url: str) -> None:
    upgrade(url, "0002")
    engine = make_engine(url)
    with engine.begin() as connection:
        for statement in (RUN_7, *ROWS_0002):
            connection.execute(text(statement))
    engine.dispose()


def _kept(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = make_engine(url)
    with engine.connect() as connection:
        rows = {query: [tuple(row) for row in connection.execute(text(query))] for query in KEPT}
    engine.dispose()
    return rows


@pytest.mark.parametrize("kind", DB_PARAMS)
def test_upgrade_from_0002_keeps_each_runs_outputs_audit_quarantine_and_samples(
    kind: str, tmp_path: Path
) -> None:
    """README: the worker refuses a schema that is behind until `meterfix db upgrade`, and the
    quarantine holds rows "in full". On SQLite, 0003 rebuilt `remediation_runs` and
    `error_reports` (to add their CHECK constraints) with foreign keys on: dropping the old
    table deleted, by ON DELETE CASCADE, every output object, audit row, quarantined row and
    error sample of every run and report written before."""
    for url in _empty_database(kind, tmp_path):
        _at_0002_with_rows(url)
        upgrade(url)
        assert _kept(url) == KEPT


@pytest.fixture
def disk_full_after(request: pytest.FixtureRequest) -> Iterator[list[int]]:
    """While the list holds a page count, every new SQLite connection may grow its database
    to that many pages only (SQLite's `max_page_count`): the disk is full past it."""
    pages: list[int] = []

    def limit(dbapi_connection: Any, _record: object) -> None:
        if pages:
            dbapi_connection.execute(f"PRAGMA max_page_count={pages[0]}")

    event.listen(Engine, "connect", limit)
    yield pages
    event.remove(Engine, "connect", limit)


def test_upgrade_stopped_by_a_full_disk_runs_again_once_there_is_room(
    tmp_path: Path, disk_full_after: list[int]
) -> None:
    """Expected of `meterfix db upgrade`: one clear line on failure, nothing lost, and the
    same command run again finishes. On SQLite each migration's DDL was committed statement
    by statement (sqlite3 opens no transaction for DDL): a disk full midway through 0003 left
    its `_alembic_tmp_error_reports` table behind, and every later upgrade failed with `table
    _alembic_tmp_error_reports already exists`."""
    url = f"sqlite:///{tmp_path / 'meterfix.db'}"
    _at_0002_with_rows(url)
    engine = make_engine(url)
    with engine.begin() as connection:  # reports enough that copying them needs new pages
        connection.execute(
            text(
                "INSERT INTO error_reports (event_id, event_type, livemode, summary,"
                " error_count, status, detail, created_at) VALUES (:event, 'e', false,"
                " :summary, 0, 'recorded', '{}', CURRENT_TIMESTAMP)"
            ),
            [{"event": f"evt_{n}", "summary": "x" * 1000} for n in range(2, 300)],
        )
    with engine.connect() as connection:
        pages = int(connection.exec_driver_sql("PRAGMA page_count").scalar_one())
    engine.dispose()
    disk_full_after.append(pages + 8)
    with pytest.raises(Exception, match="database or disk is full"):
        upgrade(url)
    disk_full_after.clear()
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as connection:
        tables = connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))
        assert not [name for name in tables.scalars() if name.startswith("_alembic_tmp")]
    engine.dispose()
    assert _kept(url) == KEPT


def _waiting_on_a_lock(admin: Engine, application: str) -> int:
    """How many backends of processes started with PGAPPNAME=`application` wait on a lock."""
    with admin.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = :application AND wait_event_type = 'Lock'"
                ),
                {"application": application},
            ).scalar_one()
        )


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL only: set MFX_TEST_DATABASE_URL")
def test_two_db_upgrades_at_once_both_succeed(tmp_path: Path) -> None:
    """Procfile: `release: meterfix db upgrade`, and the README recommends PostgreSQL for
    several instances; two pods starting together run it twice at once. Both read the
    revision they were at, both ran the migrations after it, and the second to commit failed
    (`Online migration expected to match one row when updating '0012' to '0013'`, or a
    duplicate key when creating the tables of a fresh schema), failing that pod's release."""
    for url in _empty_database("postgresql", tmp_path):
        upgrade(url, "0012")
        results = _two_upgrades_meeting_at_0013(url, tmp_path)
        engine = make_engine(url)
        with engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version"))
            assert version.scalars().all() == ScriptDirectory(str(MIGRATIONS_DIR)).get_heads()
        engine.dispose()
        assert results == [(0, ""), (0, "")]


def _two_upgrades_meeting_at_0013(url: str, cwd: Path) -> list[tuple[int, str]]:
    """Two `meterfix db upgrade` processes started together, both let go only once both
    wait (0013 alters `remediation_runs`, locked here meanwhile): exit codes and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MFX_", "DATABASE_URL"))}
    application = f"mfx-release-{uuid.uuid4().hex[:8]}"
    env |= {"DATABASE_URL": url, "LOG_LEVEL": "ERROR", "PGAPPNAME": application}
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    holder = make_engine(url)
    with holder.connect() as connection:
        connection.execute(text("LOCK TABLE remediation_runs IN ACCESS EXCLUSIVE MODE"))
        pods = [
            subprocess.Popen(
                [MFX, "db", "upgrade"], env=env, cwd=cwd, stderr=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        deadline = time.monotonic() + 60
        while _waiting_on_a_lock(admin, application) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        connection.rollback()
    holder.dispose()
    admin.dispose()
    return [(pod.wait(60), pod.communicate()[1]) for pod in pods]


def test_db_upgrade_into_a_missing_folder_says_so_in_one_line(tmp_path: Path) -> None:
    """README: "Every command exits non-zero with one clear line on failure." A SQLite file
    in a folder that does not exist printed SQLAlchemy's two lines (`unable to open database
    file`, then `(Background on this error at: https://sqlalche.me/...)`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MFX_", "DATABASE_URL"))}
    env |= {"DATABASE_URL": f"sqlite:///{tmp_path / 'none' / 'meterfix.db'}", "LOG_LEVEL": "ERROR"}
    result = subprocess.run(
        [MFX, "db", "upgrade"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr == (
        "Error: migration failed: OperationalError: unable to open database file\n"
    )


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL only: set MFX_TEST_DATABASE_URL")
def test_db_upgrade_into_a_schema_not_created_says_so(tmp_path: Path) -> None:
    """README: "Every command exits non-zero with one clear line on failure." A DATABASE_URL
    whose `options=-csearch_path=` names a schema not created yet failed with `TypeError:
    int() argument must be ... not 'NoneType'` (no current schema to derive the upgrade's
    lock from)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"  # never created
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MFX_", "DATABASE_URL"))}
    env |= {"DATABASE_URL": _pg_schema_url(schema), "LOG_LEVEL": "ERROR"}
    result = subprocess.run(
        [MFX, "db", "upgrade"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"Error: migration failed: ValueError: no schema of the search_path ({schema})"
        " exists: create it first\n"
    )
