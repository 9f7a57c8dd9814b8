"""The worker's state on /api/health and the overview card, with the real console script.

A `meterfix worker` stopped by SIGTERM (or Ctrl-C) wrote no last beat: its row kept
`{"item": null}`, so /api/health said `running` and the card "1 s ago", plain, until
MFX_HEARTBEAT_SILENCE passed, and then `silent`, red, as if it had hung. It ends with
`{"doing": "stopped"}` now, as `meterfix poll` does, and `meterfix worker --once` with
`{"doing": "exited"}`, as `poll --once` does. A worker killed with SIGKILL writes nothing:
past the limit it is silent. Failed before: 'running' == 'stopped'; 'running' == 'exited'."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, select

from service.config import Settings
from service.db import make_engine
from service.models._types import table_of
from service.models.health import Heartbeat
from tests.integration.test_poller_state_stopped_or_alongside import _card
from tests.integration.test_web_api import TOKEN, Api, api, stripe_settings  # noqa: F401
from tests.integration.test_worker_process import MFX, _env

BEATS = table_of(Heartbeat)


def _worker_rows(engine: Engine) -> list[Any]:
    query = select(BEATS.c.instance, BEATS.c.detail).where(BEATS.c.role == "worker")
    with engine.connect() as connection:
        return list(connection.execute(query))


def _wait_for_a_beat(engine: Engine, timeout: float = 180) -> Any:
    """The first beat: starting two interpreters (supervisor, worker) on a loaded 2-core CI
    machine took a minute."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rows := _worker_rows(engine):
            return rows[0]
        time.sleep(0.1)
    raise AssertionError("the worker never beat")


@pytest.fixture
def start_worker(
    db_url: str, sandbox_server: Any, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts `meterfix worker` (its supervisor, which runs the worker process); each one
    still alive is killed at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**extra: str) -> subprocess.Popen[bytes]:
        env = _env(db_url, sandbox_server, sandbox_server.url, **extra)
        process = subprocess.Popen(
            [MFX, "worker"], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def test_a_worker_stopped_by_sigterm_is_shown_stopped_not_running(
    api: Api,  # noqa: F811
    start_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """Ctrl-C alike: the supervisor sends the worker process SIGTERM on either."""
    worker = start_worker()
    instance, detail = _wait_for_a_beat(api.engine)
    assert detail == {"item": None}
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0

    entry = api.get("/api/health")["heartbeats"]["worker"]
    assert entry["state"] == "stopped" and entry["last_beat_at"]
    assert (entry["instance"], entry["detail"]) == (instance, {"doing": "stopped"})
    assert [tuple(r) for r in _worker_rows(api.engine)] == [(instance, {"doing": "stopped"})]
    card = _card(api, "worker")
    assert 'class="card muted"' in card and 'data-state="stopped"' in card
    assert ">stopped</span>" in card and "not running: stopped " in card
    assert " s ago" not in card and "exited" not in card


def test_a_worker_once_that_drained_is_shown_exited(
    api: Api,  # noqa: F811
    db_url: str,
    sandbox_server: Any,
    tmp_path: Path,
) -> None:
    env = _env(db_url, sandbox_server, sandbox_server.url)
    once = subprocess.run(
        [MFX, "worker", "--once"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert once.returncode == 0 and "processed 0" in once.stdout, once.stderr

    entry = api.get("/api/health")["heartbeats"]["worker"]
    assert entry["state"] == "exited"
    [(_, detail)] = _worker_rows(api.engine)
    assert detail == {"doing": "exited"}
    card = _card(api, "worker")
    assert 'class="card muted"' in card and "not running: exited " in card


def test_a_worker_killed_with_sigkill_goes_silent_past_the_limit(
    db_url: str,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
    start_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """Killed, it writes no last beat: shown running until MFX_HEARTBEAT_SILENCE (2 s here)
    passes, then silent and red, never stopped."""
    settings = stripe_settings(
        make_settings, database_url=db_url, mfx_admin_token=TOKEN, mfx_heartbeat_silence=2
    )
    engine = make_engine(db_url)
    api = Api(make_app(settings).test_client(), engine)  # noqa: F811
    try:
        supervisor = start_worker()
        instance, _ = _wait_for_a_beat(engine)
        worker_pid = int(instance.split(":")[1])  # host:pid:random
        supervisor.send_signal(signal.SIGKILL)  # the worker process dies with it
        supervisor.wait(30)
        _wait_until_gone(worker_pid)

        deadline = time.monotonic() + 60  # it beat every 10 s (the default lease's third)
        entry = api.get("/api/health")["heartbeats"]["worker"]
        while entry["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
            entry = api.get("/api/health")["heartbeats"]["worker"]
        assert entry["state"] == "silent" and entry["detail"] == {"item": None}
        card = _card(api, "worker")
        assert 'class="card bad"' in card and 'data-state="silent"' in card
        assert "silent: last heartbeat " in card and "not running" not in card
    finally:
        engine.dispose()


def _wait_until_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # a zombie not reaped yet is gone too: it beats no more
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
                return
        except FileNotFoundError:
            return
        time.sleep(0.1)
    raise AssertionError(f"the worker process {pid} outlived its supervisor")
