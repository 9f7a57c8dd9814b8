"""The worker's state on /api/health and the overview card, with the real console script.

A `meterfix worker` stopped by SIGTERM (or Ctrl-C) wrote no last beat: its row kept
`{"item": null}`, so /api/health said `running` and the card "1 s ago", plain, until
MFX_HEARTBEAT_SILENCE passed, and then `silent`, red, as if it had hung. It ends with
`{"doing": "stopped"}` now, as `meterfix poll` does, and `meterfix worker --once` with
`{"doing": "exited"}`, as `poll --once` does. A worker killed with SIGKILL writes nothing:
past the limit it is silent. Failed before: 'running' == 'stopped'; 'running' == 'exited'.

A regular beat held up past the stop (the heartbeat thread stuck on a database lock, or
starved, longer than the 2 s the stop waits for it) landed after that last beat and put the
row back to `{"item": null}`: running, then silent past the limit, never stopped. Held here
by the test's own event, in-process; the writes are the real ones."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, event, select

from service.config import Settings
from service.db import make_engine
from service.models._types import table_of
from service.models.health import Heartbeat, ProcessRole
from service.worker.drain_loop import run_loop
from service.worker.heartbeats import Ended, beat, beat_ended
from service.worker.loop import InboxWorker
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


class _HeldBeat:
    """Holds the heartbeat thread's next statement, once `armed`, until `release` is set (as
    a lock on the database or a starved thread would); `held` says it is held."""

    def __init__(self, engine: Engine) -> None:
        self.armed = False
        self.held, self.release = threading.Event(), threading.Event()
        event.listen(engine, "before_cursor_execute", self._hold)

    def _hold(self, *_: object) -> None:
        if self.armed and threading.current_thread().name == "meterfix-heartbeat":
            self.armed = False
            self.held.set()
            self.release.wait(60)


def test_a_beat_held_up_past_the_stop_does_not_undo_the_stopped_beat(
    db_url: str, make_settings: Callable[..., Settings]
) -> None:
    """Failed before: the held beat landed last, `{'item': None}` == `{'doing': 'stopped'}`."""
    engine = make_engine(db_url)
    worker = InboxWorker(engine, make_settings(database_url=db_url, mfx_worker_lease=3))
    held, stop = _HeldBeat(engine), threading.Event()
    loop = threading.Thread(target=run_loop, args=(worker, stop, lambda _: []), daemon=True)
    try:
        loop.start()
        instance, _ = _wait_for_a_beat(engine, timeout=30)
        held.armed = True  # the thread's next beat, within a second (a lease of 3 s)
        assert held.held.wait(30), "the heartbeat thread never beat again"
        stop.set()
        loop.join(30)
        assert not loop.is_alive()
        assert [tuple(r) for r in _worker_rows(engine)] == [(instance, {"doing": "stopped"})]
        held.release.set()
        for thread in threading.enumerate():
            if thread.name == "meterfix-heartbeat":  # left behind by the stop, beating late
                thread.join(30)
        assert [tuple(r) for r in _worker_rows(engine)] == [(instance, {"doing": "stopped"})]
    finally:
        held.release.set()
        stop.set()
        engine.dispose()


@pytest.mark.parametrize(
    ("role", "ended", "detail"),
    [
        (ProcessRole.WORKER, Ended.EXITED, {}),  # `worker --once`, its thread's beat late
        (ProcessRole.WORKER, Ended.STOPPED, {}),
        (ProcessRole.POLLER, Ended.EXITED, {"pass": "ran"}),  # `poll --once`
        (ProcessRole.POLLER, Ended.STOPPED, {}),
    ],
)
def test_a_regular_beat_after_the_last_one_leaves_the_process_ended(
    db_url: str, role: ProcessRole, ended: Ended, detail: dict[str, str]
) -> None:
    """Whoever's beat comes late, the row keeps the ended state and its time (failed
    before: the late beat replaced both)."""
    engine = make_engine(db_url)
    try:
        beat_ended(engine, "host:1:a", role, ended, detail)
        [(ended_at, last)] = _beat_rows(engine)
        beat(engine, "host:1:a", role, {"doing": "pass"})
        beat(engine, "host:1:a", role, {"item": None})
        beat(engine, "host:1:a", role)
        assert last == {"doing": ended.value, **detail}
        assert _beat_rows(engine) == [(ended_at, last)]
        beat(engine, "host:2:b", role, {"item": None})  # another instance beats as ever
        assert [d for _, d in _beat_rows(engine)] == [last, {"item": None}]
    finally:
        engine.dispose()


def _beat_rows(engine: Engine) -> list[tuple[Any, dict[str, Any]]]:
    query = select(BEATS.c.last_beat_at, BEATS.c.detail).order_by(BEATS.c.instance)
    with engine.connect() as connection:
        return [(row.last_beat_at, dict(row.detail)) for row in connection.execute(query)]
