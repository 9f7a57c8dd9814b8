"""A failed-records file larger than `MFX_TASK_TIME_LIMIT` lets it be read, remediated by a
real `meterfix worker --once` process: the download is given the time its bytes take at
1 MiB/s beyond the limit, and the task as long (the two disagreed: every try of the task
failed at the limit itself, the file's rows never corrected). A download that stops part way
still fails its task at that allowance. Real parts: the sandbox's Files API behind a WSGI
middleware that sends the contents slowly (`SlowContents`), a file:// bucket, SQLite and
PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlmodel import Session, select

from sandbox.defaults import sandbox_bases
from sandbox.events import build_import_set_event
from service.config import Settings
from service.db import make_engine
from service.models import InboxEvent, RemediationRun
from tests.conftest import SandboxServer
from tests.servers import serve_wsgi

MFX = str(Path(sys.executable).parent / "meterfix")
MIB = 1024 * 1024
HEADER = (
    "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,"
    "error_code,error_message\n"
)
# Stripe's reason, long, so that a file of a few MiB holds a few thousand rows only (the
# task's own work on them stays well inside its limit on a loaded machine)
REASON = "The timestamp is in milliseconds; it must be in seconds. " * 32


class SlowContents:
    """WSGI middleware in front of the sandbox: a file's contents (`/contents`) are sent
    `step` bytes every `every` s with their Content-Length, and from `stall_at` bytes on
    nothing more until `released` (a download hung part way); everything else at once."""

    def __init__(self, app: Any, step: int, every: float, stall_at: int | None = None) -> None:
        self.app, self.step, self.every, self.stall_at = app, step, every, stall_at
        self.released = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if not environ["PATH_INFO"].endswith("/contents"):
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        answered: list[Any] = []
        body = b"".join(self.app(environ, lambda status, headers, *_: answered.append(status)))
        start_response(answered[0], [("Content-Length", str(len(body)))])
        return self._dripped(body)

    def _dripped(self, body: bytes) -> Iterator[bytes]:
        for at in range(0, len(body), self.step):
            if self.stall_at is not None and at >= self.stall_at:
                self.released.wait(60)
                return
            yield body[at : at + self.step]
            time.sleep(self.every)


@dataclass
class BigFile:
    settings: Settings
    env: dict[str, str]
    rows: int


def _failed_records(size: int) -> tuple[bytes, int]:
    """A failed-records file of about `size` bytes, every row correctable (milliseconds)."""
    now_ms = (int(time.time()) - 60) * 1000
    lines = [HEADER]
    n = 0
    while sum(map(len, lines)) < size:
        lines.append(f"big-{n},{now_ms},api_requests,cus_1,5,timestamp_in_future,{REASON}\n")
        n += 1
    return "".join(lines).encode(), n


@pytest.fixture
def big_file(
    request: pytest.FixtureRequest,
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> Iterator[BigFile]:
    """A ~`size` MiB failed-records file of import set `impset_big`, delivered; the worker's
    environment with a 1 s MFX_TASK_TIME_LIMIT and the files host behind `SlowContents`
    (`request.param`: its step, every, stall_at)."""
    size, step, every, stall_at = request.param
    slow = SlowContents(sandbox_server.app, step, every, stall_at)
    sandbox_server.admin.create_meter("api_requests")
    content, rows = _failed_records(size)
    file = sandbox_server.admin.upload_file(content, "failed_records.csv", "data_management")
    with serve_wsgi(slow) as files_host:
        settings = make_settings(
            database_url=db_url,
            stripe_api_key=sandbox_server.api_key,
            stripe_webhook_secrets=sandbox_server.webhook_secret,
            stripe_api_base=sandbox_server.bases["api"],
            stripe_files_base=sandbox_bases(files_host.url)["files"],
            stripe_meter_events_base=sandbox_server.bases["meter_events"],
        )
        body = {
            "id": "impset_big",
            "object": "data_management.import_set",
            "status": "succeeded_with_errors",
            "result": {"errors": {"file": file["id"], "row_count": rows}},
        }
        event = sandbox_server.admin.add_event(
            build_import_set_event("data_management.import_set.succeeded", body)
        )
        with serve_wsgi(make_app(settings)) as web:
            delivered = sandbox_server.admin.deliver(event["id"], f"{web.url}/webhooks")
            assert delivered["status"] == 200
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "MFX_"))}
        env.update(
            DATABASE_URL=settings.database_url,
            BUCKET_URL=settings.bucket_url,
            MFX_WORK_DIR=str(settings.mfx_work_dir),
            STRIPE_API_KEY=sandbox_server.api_key,
            STRIPE_WEBHOOK_SECRETS=sandbox_server.webhook_secret,
            STRIPE_API_BASE=settings.stripe_api_base,
            STRIPE_FILES_BASE=settings.stripe_files_base,
            STRIPE_METER_EVENTS_BASE=settings.stripe_meter_events_base,
            MFX_TASK_TIME_LIMIT="1",
            MFX_WORKER_INTERVAL="0.1",
        )
        try:
            yield BigFile(settings, env, rows)
        finally:
            slow.released.set()


def _worker_once(big: BigFile, cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    result = subprocess.run(
        [MFX, "worker", "--once"],
        env=big.env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    return time.monotonic() - started, result


def _task(settings: Settings) -> InboxEvent:
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            return session.exec(select(InboxEvent).where(InboxEvent.style == "task")).one()
    finally:
        engine.dispose()


def _runs(settings: Settings) -> list[RemediationRun]:
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            return list(session.exec(select(RemediationRun)).all())
    finally:
        engine.dispose()


# 6 MiB at ~2 MiB/s: 3 s to read, past the task's 2 s limit; its allowance 2 + 6 s
@pytest.mark.parametrize("big_file", [(6 * MIB, 64 * 1024, 0.03, None)], indirect=True)
def test_a_file_read_slower_than_the_limit_but_steadily_is_remediated(
    big_file: BigFile, tmp_path: Path
) -> None:
    """Before: "exceeded the 1 s time limit" at every try (dead-lettered after the last), no
    corrected object. Now the task's limit grows with the download's allowance: done at the
    first try, every row corrected in the corrected object. The limit here is 2 s, not the
    fixture's 1: a loaded CI machine took more than 1 s for the task's own work on 12,000
    rows (the download's time aside) and failed it at its limit."""
    big_file.env["MFX_TASK_TIME_LIMIT"] = "2"
    took, result = _worker_once(big_file, tmp_path)
    assert result.returncode == 0, result.stderr
    task = _task(big_file.settings)
    assert (task.status, task.attempts, task.last_error) == ("done", 1, None)
    assert took > 3  # the download alone took longer than the limit
    [run] = _runs(big_file.settings)
    assert (run.status, run.corrected, run.quarantined) == ("done", big_file.rows, 0)
    bucket = Path(big_file.settings.bucket_url.removeprefix("file://"))
    [corrected] = bucket.glob("corrected/impset_big/*.corrected.r1.csv")
    lines = corrected.read_text().splitlines()
    assert len(lines) == 1 + big_file.rows
    identifiers = {line.split(",", 1)[0] for line in lines[1:]}
    assert identifiers == {f"big-{n}-mfx1" for n in range(big_file.rows)}


# 3 MiB whose bytes stop after the first 512 KiB: its allowance is 1 + 3 s
@pytest.mark.parametrize("big_file", [(3 * MIB, 64 * 1024, 0.01, 512 * 1024)], indirect=True)
def test_a_file_whose_bytes_stop_still_fails_its_task_at_its_allowance(
    big_file: BigFile, tmp_path: Path
) -> None:
    """A download that hangs part way is not waited on past what its size allows: the task
    fails within about 1 + 3 s, is left pending for its retry, and nothing is uploaded."""
    took, result = _worker_once(big_file, tmp_path)
    assert result.returncode == 0, result.stderr
    assert took < 30
    task = _task(big_file.settings)
    assert (task.status, task.attempts) == ("pending", 1)
    assert task.last_error is not None
    assert "time limit" in task.last_error or "not read within" in task.last_error
    bucket = Path(big_file.settings.bucket_url.removeprefix("file://"))
    assert not list(bucket.glob("corrected/**/*.csv"))
