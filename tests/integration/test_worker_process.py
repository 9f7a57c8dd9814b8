"""`meterfix worker` as a real process: SIGKILL mid-event, SIGTERM and Ctrl-C mid-item, a slow
item keeping its lease, the time limit, `--once` exit codes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from sandbox.events import build_error_report_event
from service.db import make_engine
from service.db.migrate import upgrade
from service.models import Alert, ErrorReport, ErrorSample
from service.models._types import as_utc
from service.models.health import Heartbeat
from service.models.inbox import InboxEvent, InboxStatus
from tests.integration.intake_helpers import inbox_rows
from tests.servers import serve_wsgi

MFX = str(Path(sys.executable).parent / "meterfix")
ERRORS = [("no_meter", "No meter was found matching event_name x.", "id-9")]


class GatedEventFetch:
    """WSGI middleware in front of the sandbox: the first event fetch blocks until released."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"].startswith("/v2/core/events/") and not self.entered.is_set():
            self.entered.set()
            self.release.wait(30)
        return self.app(environ, start_response)


@pytest.fixture
def gate(sandbox_server: Any) -> Iterator[tuple[GatedEventFetch, str]]:
    gated = GatedEventFetch(sandbox_server.app)
    with serve_wsgi(gated) as server:
        yield gated, server.url
    gated.release.set()


def _env(db_url: str, sandbox: Any, api_base: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "MFX_"))}
    env.update(
        DATABASE_URL=db_url,
        STRIPE_API_KEY=sandbox.api_key,
        STRIPE_WEBHOOK_SECRETS=sandbox.webhook_secret,
        STRIPE_API_BASE=api_base,
        STRIPE_FILES_BASE=api_base,
        MFX_WORKER_INTERVAL="0.1",
        **extra,
    )
    return env


def _deliver(sandbox: Any, db_url: str, make_settings: Any, make_app: Any) -> str:
    settings = make_settings(
        database_url=db_url, stripe_webhook_secrets=[sandbox.webhook_secret], stripe_api_key="x"
    )
    event = sandbox.admin.add_event(build_error_report_event("mtr_k", ERRORS))
    with serve_wsgi(make_app(settings)) as server:
        assert sandbox.admin.deliver(event["id"], f"{server.url}/webhooks")["status"] == 200
    return str(event["id"])


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MFX, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_killed_worker_loses_nothing_and_duplicates_nothing(
    db_url: str, sandbox_server: Any, gate: Any, make_settings: Any, make_app: Any, tmp_path: Path
) -> None:
    gated, gate_url = gate
    event_id = _deliver(sandbox_server, db_url, make_settings, make_app)
    env = _env(db_url, sandbox_server, gate_url, MFX_WORKER_LEASE="1")
    worker = subprocess.Popen([MFX, "worker"], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        assert gated.entered.wait(30), "the worker never fetched the event"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    [row] = inbox_rows(db_url)
    assert (row.status, row.attempts) == (InboxStatus.PROCESSING, 1)
    gated.release.set()
    time.sleep(1.2)  # the dead worker's lease (1 s) expires
    result = _run(["worker", "--once"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "processed 1" in result.stdout
    [row] = inbox_rows(db_url)
    assert (row.status, row.attempts, row.locked_by) == (InboxStatus.DONE, 2, None)
    engine = make_engine(db_url)
    with Session(engine) as session:
        assert [r.event_id for r in session.exec(select(ErrorReport)).all()] == [event_id]
        assert len(session.exec(select(ErrorSample)).all()) == 1
    engine.dispose()


def test_once_exits_zero_and_says_what_failed(
    db_url: str, sandbox_server: Any, make_settings: Any, make_app: Any, tmp_path: Path
) -> None:
    event_id = _deliver(sandbox_server, db_url, make_settings, make_app)
    sandbox_server.admin.inject_fault("GET", "/v2/core/events", 500, count=2)
    result = _run(["worker", "--once"], _env(db_url, sandbox_server, sandbox_server.url), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "retrying 1" in result.stdout and f"failed (will retry): {event_id}" in result.stdout
    assert inbox_rows(db_url)[0].status == InboxStatus.PENDING


def test_once_fails_when_database_unreachable(sandbox_server: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    result = _run(["worker", "--once"], _env(url, sandbox_server, sandbox_server.url), tmp_path)
    assert result.returncode != 0
    assert "database unavailable" in result.stderr and "Traceback" not in result.stderr


def test_sigterm_stops_the_loop(sqlite_url: str, sandbox_server: Any, tmp_path: Path) -> None:
    env = _env(sqlite_url, sandbox_server, sandbox_server.url)
    with subprocess.Popen(
        [MFX, "worker"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    ) as worker:
        assert worker.stderr is not None
        for line in worker.stderr:
            if "worker.started" in line:
                break
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(10) == 0
        assert "worker.stopped" in worker.stderr.read()


def test_serve_binds_loopback_by_default(
    sqlite_url: str, sandbox_server: Any, tmp_path: Path
) -> None:
    import requests

    from tests.servers import free_port

    port = free_port()
    env = _env(sqlite_url, sandbox_server, sandbox_server.url)
    with subprocess.Popen(
        [MFX, "serve", "--port", str(port)], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL
    ) as server:
        try:
            deadline = time.time() + 20
            while True:
                try:
                    response = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except requests.ConnectionError:
                    assert time.time() < deadline, "serve never answered"
                    time.sleep(0.1)
            assert response.status_code == 200
            if shutil.which("ss"):  # the socket listens on loopback only
                listening = subprocess.run(
                    ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
                ).stdout
                assert listening.split()[3] == f"127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(10)


def test_once_fails_on_bad_configuration(
    sqlite_url: str, sandbox_server: Any, tmp_path: Path
) -> None:
    env = _env(sqlite_url, sandbox_server, sandbox_server.url, MFX_MAX_ATTEMPTS="0")
    result = _run(["worker", "--once"], env, tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "bad configuration: MFX_MAX_ATTEMPTS" in result.stderr


# --- liveness: leases renewed by the heartbeat, time limits, stopping mid-item ------------


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _heartbeat_of(db_url: str, instance: str) -> Heartbeat:
    engine = make_engine(db_url)
    with Session(engine) as session:
        beat = session.exec(select(Heartbeat).where(Heartbeat.instance == instance)).one()
    engine.dispose()
    return beat


def test_slow_worker_keeps_its_item_and_beats(
    db_url: str, sandbox_server: Any, gate: Any, make_settings: Any, make_app: Any, tmp_path: Path
) -> None:
    gated, gate_url = gate
    event_id = _deliver(sandbox_server, db_url, make_settings, make_app)
    env = _env(db_url, sandbox_server, gate_url, MFX_WORKER_LEASE="1")
    with subprocess.Popen([MFX, "worker"], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL) as w:
        try:
            assert gated.entered.wait(30), "the worker never fetched the event"
            time.sleep(2.5)  # two and a half leases: only the heartbeat keeps the item
            result = _run(["worker", "--once"], env, tmp_path)
            assert "processed 0" in result.stdout, result.stdout
            [row] = inbox_rows(db_url)
            assert (row.status, row.attempts) == (InboxStatus.PROCESSING, 1)
            assert row.locked_by is not None
            beat = _heartbeat_of(db_url, row.locked_by)
            assert (beat.role, beat.detail["item"]) == ("worker", event_id)
            age = datetime.now(UTC) - (
                as_utc(beat.last_beat_at) or datetime.min.replace(tzinfo=UTC)
            )
            assert age.total_seconds() < 5  # beats every 1/3 s (a loaded machine may lag)
            gated.release.set()
            _wait_for(lambda: inbox_rows(db_url)[0].status == InboxStatus.DONE, 15, "done")
            assert inbox_rows(db_url)[0].attempts == 1  # never taken over
        finally:
            w.terminate()
            w.wait(10)


def test_ctrl_c_mid_item_stops_at_once_and_hands_the_item_back(
    db_url: str, sandbox_server: Any, gate: Any, make_settings: Any, make_app: Any, tmp_path: Path
) -> None:
    gated, gate_url = gate
    _deliver(sandbox_server, db_url, make_settings, make_app)
    env = _env(db_url, sandbox_server, gate_url)  # the default lease (30 s)
    worker = subprocess.Popen([MFX, "worker"], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        assert gated.entered.wait(30), "the worker never fetched the event"
        worker.send_signal(signal.SIGINT)
        assert worker.wait(8) == 0  # does not wait for the item (the gate holds it 30 s)
    finally:
        worker.kill()
        worker.wait(10)
    [row] = inbox_rows(db_url)
    assert (row.status, row.attempts, row.locked_by) == (InboxStatus.PENDING, 0, None)
    gated.release.set()
    result = _run(["worker", "--once"], env, tmp_path)  # taken at once, not after the lease
    assert "processed 1" in result.stdout, result.stdout
    [row] = inbox_rows(db_url)
    assert (row.status, row.attempts) == (InboxStatus.DONE, 1)


def test_an_item_past_its_time_limit_is_failed_and_the_queue_moves_on(
    sqlite_url: str,
    sandbox_server: Any,
    gate: Any,
    make_settings: Any,
    make_app: Any,
    tmp_path: Path,
) -> None:
    db_url = sqlite_url  # the failure's bookkeeping on PostgreSQL: test_worker.py, in-process
    _, gate_url = gate
    stuck = _deliver(sandbox_server, db_url, make_settings, make_app)  # its fetch hangs
    later = _deliver(sandbox_server, db_url, make_settings, make_app)
    env = _env(db_url, sandbox_server, gate_url, MFX_TASK_TIME_LIMIT="1", MFX_MAX_ATTEMPTS="1")
    log = tmp_path / "worker.log"
    with (
        log.open("w") as stderr,
        subprocess.Popen([MFX, "worker"], env=env, cwd=tmp_path, stderr=stderr) as worker,
    ):
        try:
            wanted = {stuck: InboxStatus.DEAD, later: InboxStatus.DONE}
            _wait_for(
                lambda: {r.event_id: r.status for r in inbox_rows(db_url)} == wanted,
                60,  # a restart in place re-imports the worker: ~20 s on a loaded 2-core CI
                "the stuck item dead-lettered and the next one done",
            )
            assert worker.poll() is None  # restarted in place, still running
        finally:
            worker.terminate()
            assert worker.wait(10) == 0
    rows = {r.event_id: r for r in inbox_rows(db_url)}
    assert "exceeded the 1 s time limit" in (rows[stuck].last_error or "")
    assert "worker.restarting" in log.read_text()
    engine = make_engine(db_url)
    with Session(engine) as session:
        alert = session.exec(select(Alert).where(Alert.kind == "inbox.dead_letter")).one()
        # the reports, about rows of no file of ours, raised their meter's warning
        kinds = {
            a.kind for a in session.exec(select(Alert).where(Alert.kind != "inbox.dead_letter"))
        }
    engine.dispose()
    assert alert.alert_key == f"inbox.dead:{stuck}" and "time limit" in alert.message
    assert kinds == {"error_report.unmatched"}


def test_worker_before_db_upgrade_says_what_to_run(sandbox_server: Any, tmp_path: Path) -> None:
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"  # exists once opened, but has no schema
    older = f"sqlite:///{tmp_path / 'older.db'}"
    upgrade(older, "0001")  # a schema from before this code's migrations
    for url, args in ((fresh, ["worker", "--once"]), (fresh, ["worker"]), (older, ["worker"])):
        result = _run(args, _env(url, sandbox_server, sandbox_server.url), tmp_path)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        [line] = result.stderr.strip().splitlines()
        assert "run `meterfix db upgrade`" in line


HOGGING_HANDLER = """
import re

import handlers
import service.worker.item_deadline

service.worker.item_deadline.HARD_LIMIT_GRACE_SECONDS = 1
_known = handlers.handler_for


def _hog(event, context):  # C code that never lets go of the interpreter (the GIL)
    return re.match(r"(a+)+$", "a" * 64 + "b")


handlers.handler_for = lambda event_type: _hog if event_type == "test.hog" else _known(event_type)
"""


def test_an_item_holding_the_interpreter_is_ended_by_the_watchdog(
    sqlite_url: str, sandbox_server: Any, tmp_path: Path
) -> None:
    db_url = sqlite_url  # the watchdog does not depend on the database
    engine = make_engine(db_url)
    with Session(engine) as session:
        session.add(
            InboxEvent(event_id="evt_hog", event_type="test.hog", style="snapshot", body="{}")
        )
        session.commit()
    engine.dispose()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HOGGING_HANDLER)  # loaded first by the worker only
    env = _env(db_url, sandbox_server, sandbox_server.url, PYTHONPATH=str(site))
    env.update(MFX_TASK_TIME_LIMIT="1", MFX_WORKER_LEASE="1", MFX_MAX_ATTEMPTS="1")
    log = tmp_path / "worker.log"
    with (
        log.open("w") as stderr,
        subprocess.Popen([MFX, "worker"], env=env, cwd=tmp_path, stderr=stderr) as worker,
    ):
        try:
            _wait_for(lambda: inbox_rows(db_url)[0].status == InboxStatus.DEAD, 40, "dead")
            assert worker.poll() is None  # the supervisor restarted the worker process
        finally:
            worker.terminate()
            assert worker.wait(15) == 0
    [row] = inbox_rows(db_url)
    assert "stopped without finishing" in (row.last_error or "")
    text = log.read_text()
    assert "Timeout" in text and "worker.process_restarting" in text  # the watchdog's dump


def test_once_reports_an_item_past_its_time_limit_and_exits(
    sqlite_url: str,
    sandbox_server: Any,
    gate: Any,
    make_settings: Any,
    make_app: Any,
    tmp_path: Path,
) -> None:
    _, gate_url = gate
    event_id = _deliver(sandbox_server, sqlite_url, make_settings, make_app)  # its fetch hangs
    env = _env(sqlite_url, sandbox_server, gate_url, MFX_TASK_TIME_LIMIT="1")
    started = time.monotonic()
    result = _run(["worker", "--once"], env, tmp_path)
    assert result.returncode == 0 and time.monotonic() - started < 20  # the gate holds 30 s
    assert f"failed (will retry): {event_id}: exceeded the 1 s time limit" in result.stdout
    [row] = inbox_rows(sqlite_url)
    assert (row.status, row.attempts, row.locked_by) == (InboxStatus.PENDING, 1, None)
