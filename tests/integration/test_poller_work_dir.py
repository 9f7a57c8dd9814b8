"""The poller's failed-records files in MFX_WORK_DIR are kept until their rows are remediated,
and no longer: once the run over them is recorded done, the file goes (kept, a 200,000-row
run left 32 MB, and over weeks the disk filled). Real parts: moto S3, the sandbox as Stripe,
the worker's remediation task, the poll loop, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlmodel import select

from remediation.formats import FileFormat
from service.config import Settings
from service.db.locks import LockLost
from service.db.migrate import upgrade
from service.models import ImportSet, InboxEvent, QuarantinedRow
from service.poller import importer
from service.poller.files import FailedRecords, discard_failed_records
from service.poller.job import poll_forever
from service.poller.passes import build_poller_deps, run_poll_pass
from service.poller.store import row_numbers_path
from service.runtime import Runtime
from service.worker.inbox import requeue_event
from service.worker.loop import InboxWorker
from tests.conftest import SandboxServer
from tests.integration.test_billing_safety import usage_csv
from tests.integration.test_bucket_slow_or_down import FaultyProxy
from tests.integration.test_e2e import Loop, _put, running_loop
from tests.integration.test_poller_chaos import HEADER, MFX, STREAM, _env

POLLER_ROWS = "meterfix.remediate.poller_rows"


@pytest.fixture
def loop(
    db_url: str, s3_endpoint: str, tmp_path: Path, make_app: Callable[[Settings], Flask]
) -> Iterator[Loop]:
    with running_loop(db_url, s3_endpoint, tmp_path, make_app) as running:
        yield running


def _failed_records_files(loop: Loop) -> list[Path]:
    return sorted((Path(loop.settings.mfx_work_dir) / "poller").rglob("*.failed.*"))


def _import_a_file_with_a_refused_row(loop: Loop, name: str = "day.csv") -> Path:
    """The poller sends `a` and refuses `x` (no meter `legacy_calls`): its failed-records file."""
    now = int(time.time())
    rows: list[list[object]] = [
        [f"{name}-a", now - 60, "api_requests", "cus_alice", "3"],
        [f"{name}-x", now - 60, "legacy_calls", "cus_alice", "5"],
    ]
    _put(loop, name, usage_csv(rows))
    runtime = Runtime(loop.settings)
    try:
        report = run_poll_pass(build_poller_deps(runtime))
    finally:
        runtime.close()
    assert (report.sent, report.failed_rows) == (1, 1)
    files = [p for p in _failed_records_files(loop) if p.suffix != ".rows"]
    [path] = [p for p in files if p.read_text().count(f"{name}-x") == 1]
    return path


def _statuses(loop: Loop) -> list[tuple[str, str]]:
    with loop.session() as session:
        return [
            (i.source_object or "", i.remediation_status) for i in session.exec(select(ImportSet))
        ]


def test_a_failed_records_file_is_deleted_once_its_run_is_done(loop: Loop) -> None:
    path = _import_a_file_with_a_refused_row(loop)
    assert "legacy_calls" in path.read_text()
    loop.drain()  # the poller_rows task: x quarantined (no rule maps the meter)
    assert _statuses(loop) == [("usage/day.csv", "done")]
    assert _failed_records_files(loop) == []


def test_a_run_that_fails_before_its_record_keeps_the_file_for_its_retry(loop: Loop) -> None:
    """The bucket refuses the run's outputs: the task fails before its run is recorded, and
    its next try must find the failed-records file still there (it is its only input)."""
    path = _import_a_file_with_a_refused_row(loop)
    moto = loop.settings.s3_endpoint_url.removeprefix("http://").split(":")
    proxy = FaultyProxy((moto[0], int(moto[1])))
    proxy.mode = "refuse"
    down = loop.settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{proxy.port}"})
    try:
        report = InboxWorker(loop.engine, down).drain()
    finally:
        proxy.close()
    assert report.retrying and not report.done, report
    assert _statuses(loop) == [("usage/day.csv", "pending")]
    assert _failed_records_files(loop) == [path, row_numbers_path(path)]
    with loop.session() as session:
        [task] = session.exec(select(InboxEvent).where(InboxEvent.event_type == POLLER_ROWS))
    with loop.engine.begin() as connection:
        requeue_event(connection, task.event_id)  # due now: the bucket is back
    loop.drain()
    assert _statuses(loop) == [("usage/day.csv", "done")]
    assert _failed_records_files(loop) == []


def test_the_poller_deletes_at_start_the_files_of_runs_done_before(loop: Loop) -> None:
    """Files a finished run left (remediated before this release, or its process killed
    between the run's record and the delete) go when the poller starts; the file of an
    import set still waiting for remediation stays."""
    done = _import_a_file_with_a_refused_row(loop, "done.csv")
    kept_text, kept_numbers = done.read_text(), row_numbers_path(done).read_bytes()
    loop.drain()
    done.write_text(kept_text)  # left behind, with its rows' numbers
    row_numbers_path(done).write_bytes(kept_numbers)
    waiting = _import_a_file_with_a_refused_row(loop, "waiting.csv")
    runtime = Runtime(loop.settings)
    stop = threading.Event()
    stop.set()  # start, and stop before the first pass
    try:
        poll_forever(build_poller_deps(runtime), stop, 60)
    finally:
        runtime.close()
    assert sorted(_statuses(loop)) == [("usage/done.csv", "done"), ("usage/waiting.csv", "pending")]
    assert _failed_records_files(loop) == [waiting, row_numbers_path(waiting)]


def test_a_pass_of_another_database_sharing_the_work_dir_keeps_this_ones_file(
    loop: Loop, tmp_path: Path
) -> None:
    """Two installations started from one directory share the default MFX_WORK_DIR
    (`.meterfix/work`, relative), each with its own database. A pass of the other, two hours
    after this one wrote its failed-records file (the remediation behind, the worker down),
    took the file as recorded by no import set (none of its own) and deleted it: this one's
    remediation stopped on the missing file (dead-lettered), `x` never quarantined. Each
    database's passes write and clear a part of the work dir of their own now: the file
    stays, and this installation's remediation quarantines `x`."""
    path = _import_a_file_with_a_refused_row(loop)
    hours_ago = time.time() - 2 * 3600
    for written in (path, row_numbers_path(path)):
        os.utime(written, (hours_ago, hours_ago))
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    upgrade(other_url)
    other = loop.settings.model_copy(
        update={"database_url": other_url, "bucket_url": f"{loop.settings.bucket_url}/other"}
    )
    _start_and_pass(other)
    assert _failed_records_files(loop) == [path, row_numbers_path(path)]
    loop.drain()
    assert _statuses(loop) == [("usage/day.csv", "done")]
    with loop.session() as session:
        assert [row.identifier for row in session.exec(select(QuarantinedRow))] == ["day.csv-x"]
    assert _failed_records_files(loop) == []


def test_a_file_recorded_before_the_database_had_its_part_is_kept_until_remediated(
    loop: Loop,
) -> None:
    """A file recorded by a release that wrote every file in the work dir itself (before a
    database had a part of its own) is read where it is recorded, kept by the passes however
    old until its remediation is done, and deleted then; left behind, a poller's start
    deletes it."""
    path = _import_a_file_with_a_refused_row(loop)
    kept_text, kept_numbers = path.read_text(), row_numbers_path(path).read_bytes()
    earlier = Path(loop.settings.mfx_work_dir).absolute() / "poller" / path.name
    path.rename(earlier)
    row_numbers_path(path).rename(row_numbers_path(earlier))
    with loop.session() as session:
        [import_set] = session.exec(select(ImportSet)).all()
        import_set.detail = {**import_set.detail, "failed_records_path": str(earlier)}
        session.add(import_set)
        session.commit()
    hours_ago = time.time() - 2 * 3600
    for written in (earlier, row_numbers_path(earlier)):
        os.utime(written, (hours_ago, hours_ago))
    _start_and_pass(loop.settings)
    assert _failed_records_files(loop) == [earlier, row_numbers_path(earlier)]
    loop.drain()
    assert _statuses(loop) == [("usage/day.csv", "done")]
    with loop.session() as session:
        assert [row.identifier for row in session.exec(select(QuarantinedRow))] == ["day.csv-x"]
    assert _failed_records_files(loop) == []
    earlier.write_text(kept_text)  # left behind, with its rows' numbers
    row_numbers_path(earlier).write_bytes(kept_numbers)
    _start_and_pass(loop.settings)
    assert _failed_records_files(loop) == []


def _start_and_pass(settings: Settings) -> None:
    """A poller's start (`clear_remediated_files`), then a pass."""
    runtime = Runtime(settings)
    stop = threading.Event()
    stop.set()
    try:
        poll_forever(build_poller_deps(runtime), stop, 60)
        assert run_poll_pass(build_poller_deps(runtime)).ran
    finally:
        runtime.close()


def test_an_import_set_saved_before_its_connection_dropped_keeps_its_file(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The import set's save committed, and its connection dropped before the answer came
    (the failure seen after the commit): the pass removed its failed-records file as recorded
    by none, and the import set recorded a file gone (its remediation stopped on it). Only a
    save its lock's fence refused (LockLost, first in the transaction: nothing saved) removes
    the file now: the recorded file stays, and the remediation quarantines `x`."""
    save = importer.save_poller_import_set

    def committed_then_dropped(*args: Any, **kwargs: Any) -> ImportSet:
        save(*args, **kwargs)
        dropped = ConnectionError("server closed the connection unexpectedly")
        raise OperationalError("COMMIT", None, dropped)

    monkeypatch.setattr(importer, "save_poller_import_set", committed_then_dropped)
    now = int(time.time())
    rows = [["a", now - 60, "api_requests", "cus_alice", "3"]]
    rows.append(["x", now - 60, "legacy_calls", "cus_alice", "5"])
    _put(loop, "day.csv", usage_csv(rows))
    runtime = Runtime(loop.settings)
    try:
        report = run_poll_pass(build_poller_deps(runtime))
        assert [error.split(": ")[1] for error in report.errors] == ["OperationalError"]
        with loop.session() as session:
            [import_set] = session.exec(select(ImportSet)).all()
        recorded = Path(str(import_set.detail["failed_records_path"]))
        assert _failed_records_files(loop) == [recorded, row_numbers_path(recorded)]
        assert "legacy_calls" in recorded.read_text()
        monkeypatch.setattr(importer, "save_poller_import_set", save)
        run_poll_pass(build_poller_deps(runtime))  # queues the pending import set's task
    finally:
        runtime.close()
    loop.drain()
    assert _statuses(loop) == [("usage/day.csv", "done")]
    with loop.session() as session:
        assert [row.identifier for row in session.exec(select(QuarantinedRow))] == ["x"]


def test_a_file_deleted_under_its_pass_leaves_the_pass_exception_as_it_was(
    tmp_path: Path,
) -> None:
    """A pass's file deleted while it writes it (a poller starting in another process
    clears it, or the next lock holder): closing it touched it (its age counts from
    there) and raised FileNotFoundError over the LockLost the pass was leaving with, and
    an import whose file was deleted failed (backing off, counting toward giving up)."""
    path = tmp_path / "impset_local_abc.failed.0123456789abcdef.jsonl"
    with pytest.raises(LockLost), FailedRecords(path, FileFormat.JSONL) as failed:
        failed._ensure_writer()
        discard_failed_records(path)  # another process's clear
        raise LockLost("poller")
    assert not path.exists() and not row_numbers_path(path).exists()
    with FailedRecords(path, FileFormat.JSONL) as failed:  # the pass leaving as it should
        failed._ensure_writer()
        discard_failed_records(path)
    assert sorted(tmp_path.iterdir()) == []


def test_the_file_of_a_pass_killed_before_recording_it_is_deleted_by_a_later_pass(
    db_url: str, sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """`meterfix poll` SIGKILLed mid-import (an out-of-memory kill) runs no cleanup: the
    failed-records file it was writing, under a name of its own, is recorded by no import set.
    The re-import had no failed row (the meter was created meanwhile): nothing recorded it,
    nothing deleted it, not even a poller's start (its import set `not_needed`), one such
    file a crash (tens of MB for a large object), and MFX_WORK_DIR grew without bound. A
    later pass deletes it once it is older than a pass whose lock dropped could still be
    about to record its own; the file an import set records, waiting for its remediation,
    stays however old. `meterfix poll` as a real process, the sandbox as Stripe."""
    sandbox_server.admin.create_meter("api_requests")
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=-1, retry_after=30)
    (tmp_path / "bucket").mkdir()
    stamp = int(time.time()) - 60
    day = f"d-a,{stamp},api_requests,cus_A,1\nd-x,{stamp},legacy_calls,cus_A,2\n"
    (tmp_path / "bucket" / "day.csv").write_text(HEADER + day)
    env = _env(db_url, sandbox_server, tmp_path)
    work = tmp_path / "work" / "poller"
    process = subprocess.Popen([MFX, "poll"], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not sorted(work.rglob("*.failed.*")):  # d-x refused, d-a's batch retried
            assert process.poll() is None and time.monotonic() < deadline, "no failed row"
            time.sleep(0.02)
    finally:
        process.kill()
        process.wait(10)
    orphans = sorted(work.rglob("*.failed.*"))
    assert [p.name.endswith(".rows") for p in orphans] == [False, True]
    sandbox_server.admin.clear_faults()
    sandbox_server.admin.create_meter("legacy_calls")
    waiting = f"w-a,{stamp},api_requests,cus_A,1\nw-x,{stamp},old_calls,cus_A,2\n"
    (tmp_path / "bucket" / "waiting.csv").write_text(HEADER + waiting)
    _poll_once(env)
    assert _import_sets(db_url) == [("day.csv", "not_needed"), ("waiting.csv", "pending")]
    assert sorted(e["identifier"] for e in sandbox_server.admin.meter_events()) == [
        "d-a",
        "d-x",
        "w-a",
    ]
    files = sorted(work.rglob("*.failed.*"))
    recorded = [p for p in files if p not in orphans]
    assert [p.name.endswith(".rows") for p in recorded] == [False, True]
    assert "w-x" in recorded[0].read_text()
    assert sorted(orphans + recorded) == files  # written just now: kept
    hours_ago = time.time() - 2 * 3600  # the next pass two hours later
    for path in files:
        os.utime(path, (hours_ago, hours_ago))
    _poll_once(env)
    assert sorted(work.rglob("*.failed.*")) == recorded
    assert _import_sets(db_url) == [("day.csv", "not_needed"), ("waiting.csv", "pending")]


def _poll_once(env: dict[str, str]) -> None:
    once = subprocess.run([MFX, "poll", "--once"], env=env, capture_output=True, timeout=60)
    assert once.returncode == 0, once.stderr.decode()[-2000:]


def _import_sets(db_url: str) -> list[tuple[str, str]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            query = text("SELECT source_object, remediation_status FROM import_sets")
            return sorted((str(key), str(status)) for key, status in connection.execute(query))
    finally:
        engine.dispose()
