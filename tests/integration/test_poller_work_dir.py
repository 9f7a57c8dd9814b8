"""The poller's failed-records files in MFX_WORK_DIR are kept until their rows are remediated,
and no longer: once the run over them is recorded done, the file goes (kept, a 200,000-row
run left 32 MB, and over weeks the disk filled). Real parts: moto S3, the sandbox as Stripe,
the worker's remediation task, the poll loop, SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlmodel import select

from service.config import Settings
from service.models import ImportSet, InboxEvent
from service.poller.job import poll_forever
from service.poller.passes import build_poller_deps, run_poll_pass
from service.poller.store import row_numbers_path
from service.runtime import Runtime
from service.worker.inbox import requeue_event
from service.worker.loop import InboxWorker
from tests.integration.test_billing_safety import usage_csv
from tests.integration.test_bucket_slow_or_down import FaultyProxy
from tests.integration.test_e2e import Loop, _put, running_loop

POLLER_ROWS = "meterfix.remediate.poller_rows"


@pytest.fixture
def loop(
    db_url: str, s3_endpoint: str, tmp_path: Path, make_app: Callable[[Settings], Flask]
) -> Iterator[Loop]:
    with running_loop(db_url, s3_endpoint, tmp_path, make_app) as running:
        yield running


def _failed_records_files(loop: Loop) -> list[Path]:
    return sorted((Path(loop.settings.mfx_work_dir) / "poller").glob("*.failed.*"))


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
