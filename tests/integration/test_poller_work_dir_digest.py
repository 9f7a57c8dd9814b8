# ruff: noqa: F811  (the fixture imported from the module that defines it)
"""The database's part of the poller's work dir (`poller/db-<digest>`) is named by where the
database is. It was named by the URL whole, credentials included (`URL.set(username=None,
password=None)` leaves both as they are): a rotated password, or a process connecting through
another driver, moved it, and a file a killed pass left in the old part was never cleared
(and a digest of the password was in a folder's name)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from sqlalchemy import create_engine, make_url
from sqlmodel import select

from remediation.formats import FileFormat
from service.db import make_engine
from service.models import ImportSet, QuarantinedRow
from service.poller.files import clear_unrecorded_files, database_files_dir, failed_records_path
from service.poller.store import row_numbers_path
from tests.integration.test_e2e import Loop
from tests.integration.test_poller_work_dir import (  # noqa: F401 (the `loop` fixture)
    _failed_records_files,
    _import_a_file_with_a_refused_row,
    _start_and_pass,
    _statuses,
    loop,
)


def _left_by_a_killed_pass(path: Path) -> Path:
    """A failed-records file (and its rows' numbers) no import set records, written two
    hours ago: a pass killed before it recorded it (SIGKILL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("identifier,error_code\nx,no_meter\n")
    row_numbers_path(path).write_bytes(b"\0" * 8)
    hours_ago = time.time() - 2 * 3600
    for written in (path, row_numbers_path(path)):
        os.utime(written, (hours_ago, hours_ago))
    return path


def _two_names(url: str) -> tuple[str, str]:
    """Two URLs two processes of the installation name its database by: PostgreSQL before
    and after its password rotated (trust authentication: any connects), SQLite through the
    default driver and the one named."""
    where = make_url(url)
    if where.get_backend_name() == "sqlite":
        return url, where.set(drivername="sqlite+pysqlite").render_as_string()
    old, new = (where.set(password=p).render_as_string(False) for p in ("old-sec", "new-sec"))
    return old, new


def test_another_url_of_the_same_database_keeps_its_part_of_the_work_dir(
    db_url: str, tmp_path: Path
) -> None:
    before, after = (make_engine(url) for url in _two_names(db_url))
    try:
        work = tmp_path / "poller"
        left = failed_records_path(work, before, "impset_local_x", FileFormat.CSV)
        _left_by_a_killed_pass(left)
        assert clear_unrecorded_files(after, work) == 2  # the file and its rows' numbers
        assert database_files_dir(work, before) == database_files_dir(work, after)
        assert not left.exists() and not row_numbers_path(left).exists()
    finally:
        before.dispose()
        after.dispose()


def _url_digest(url: str) -> str:
    """How a release before this one named the database's part: the URL whole, a SQLite
    file by its absolute path."""
    where = make_url(url)
    if where.get_backend_name() == "sqlite":
        where = where.set(database=str(Path(str(where.database)).resolve()))
    return hashlib.sha256(where.render_as_string(hide_password=False).encode()).hexdigest()[:12]


def _moved_to(path: Path, part: Path, loop: Loop) -> Path:
    """`path` and its rows' numbers moved into `part`, its import set recording it there."""
    part.mkdir(parents=True, exist_ok=True)
    moved = part / path.name
    path.rename(moved)
    row_numbers_path(path).rename(row_numbers_path(moved))
    with loop.session() as session:
        [import_set] = session.exec(select(ImportSet)).all()
        import_set.detail = {**import_set.detail, "failed_records_path": str(moved)}
        session.add(import_set)
        session.commit()
    return moved


def test_the_part_an_earlier_release_named_is_cleared_its_recorded_file_kept(loop: Loop) -> None:
    """Upgraded, the installation's part is another: the part the earlier release made holds
    a file an import set records (read there until remediated, then deleted), and one a pass
    killed left (cleared by a pass, as in the database's own part); emptied, it goes."""
    path = _import_a_file_with_a_refused_row(loop)
    kept_text, kept_numbers = path.read_text(), row_numbers_path(path).read_bytes()
    earlier = path.parent.parent / f"db-{_url_digest(loop.settings.database_url)}"
    assert earlier != path.parent
    recorded = _moved_to(path, earlier, loop)
    killed = _left_by_a_killed_pass(earlier / "impset_local_killed.failed.0123456789abcdef.csv")
    hours_ago = time.time() - 2 * 3600
    for written in (recorded, row_numbers_path(recorded)):
        os.utime(written, (hours_ago, hours_ago))
    _start_and_pass(loop.settings)
    assert not killed.exists() and not row_numbers_path(killed).exists()
    assert _failed_records_files(loop) == [recorded, row_numbers_path(recorded)]
    loop.drain()  # its remediation reads it where recorded
    assert _statuses(loop) == [("usage/day.csv", "done")]
    with loop.session() as session:
        assert [row.identifier for row in session.exec(select(QuarantinedRow))] == ["day.csv-x"]
    assert _failed_records_files(loop) == []
    recorded.write_text(kept_text)  # left behind (killed between the run's record and the delete)
    row_numbers_path(recorded).write_bytes(kept_numbers)
    _start_and_pass(loop.settings)
    assert _failed_records_files(loop) == []
    assert not earlier.exists()


def test_two_users_of_one_server_database_have_parts_of_their_own(tmp_path: Path) -> None:
    """Two installations in one PostgreSQL database as two users (each in its default schema,
    named after the user), or naming their databases by libpq services or query keys, never
    share a part: each clears the files it has not recorded, which would be the other's
    pending ones. The port left out is PostgreSQL's 5432; a password, TLS setting or timeout
    in the query does not move the part."""
    server = "postgresql+psycopg://{}@db.internal{}/meter{}"
    named = {
        "alice": server.format("alice:one", ":5432", ""),
        "bob": server.format("bob:one", ":5432", ""),
        "alice again": "postgresql://alice:two@DB.internal/meter?sslmode=require&connect_timeout=5",
        "alice, password in query": server.format("alice", "", "?password=x&sslpassword=y"),
        "prod": "postgresql+psycopg://meterfix@/?service=prod",
        "staging": "postgresql+psycopg://meterfix@/?service=staging",
        "user a": "postgresql+psycopg://@/meter?user=a",
        "user b": "postgresql+psycopg://@/meter?user=b",
    }
    engines = {name: create_engine(url) for name, url in named.items()}  # never connects
    try:
        part = {name: database_files_dir(tmp_path, e) for name, e in engines.items()}
        assert part["alice"] == part["alice again"] == part["alice, password in query"]
        assert len({part[n] for n in ("alice", "bob", "prod", "staging", "user a", "user b")}) == 6
    finally:
        for engine in engines.values():
            engine.dispose()
