"""A worker stopped after its process was restarted is shown stopped, not running.

A worker process whose item overran its time limit ends for a restart (`LoopEnd.RESTART`)
and wrote no last beat: its row kept `{"item": null}`. Once the fresh process the supervisor
started was stopped by SIGTERM (`{"doing": "stopped"}`), /api/health and the overview card
showed the old row, "running", 0 s old, until MFX_HEARTBEAT_SILENCE passed. The old process
ends with `{"doing": "restarted"}` now, a beat no instance is shown running with. Failed
before: 'running' == 'stopped'."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, select

from service.config import Settings
from service.models._types import table_of
from service.models.health import Heartbeat
from service.worker.drain_loop import LoopEnd, run_loop
from service.worker.loop import InboxWorker
from service.worker.tasks import TaskKind, enqueue_task
from tests.integration.test_poller_state_stopped_or_alongside import _card
from tests.integration.test_web_api import Api, api, stripe_settings  # noqa: F401 (fixture)

BEATS = table_of(Heartbeat)


def _worker_rows(engine: Engine) -> dict[str, Any]:
    query = select(BEATS.c.instance, BEATS.c.detail).where(BEATS.c.role == "worker")
    with engine.connect() as connection:
        return {row.instance: row.detail for row in connection.execute(query)}


def _no_jobs(_halt: threading.Event) -> list[threading.Thread]:
    return []


def _stop_once_it_beats(engine: Engine, worker: InboxWorker, stop: threading.Event) -> None:
    """SIGTERM alike, once the fresh process beat (`run_loop` beats before its first drain)."""
    deadline = time.monotonic() + 30
    while worker.worker_id not in _worker_rows(engine) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()


def test_a_worker_stopped_after_its_process_restarted_is_shown_stopped(
    api: Api,  # noqa: F811
    db_url: str,
    make_settings: Callable[..., Settings],
) -> None:
    with api.engine.begin() as connection:
        enqueue_task(connection, TaskKind.POLLER_ROWS, "stuck")
    release = threading.Event()

    def stuck_task(_kind: TaskKind, _ref: str) -> str:
        release.wait(20)
        return "finished late"

    settings = stripe_settings(
        make_settings, database_url=db_url, mfx_task_time_limit=1, mfx_worker_interval=0.05
    )
    old = InboxWorker(api.engine, settings, task_runner=stuck_task)
    try:  # the item overruns its limit: the process ends for the supervisor to restart it
        assert run_loop(old, threading.Event(), _no_jobs) is LoopEnd.RESTART
    finally:
        release.set()
    assert _worker_rows(api.engine) == {old.worker_id: {"doing": "restarted"}}
    entry = api.get("/api/health")["heartbeats"]["worker"]  # no fresh process beat yet
    assert (entry["state"], entry["detail"]) == ("running", {"doing": "restarted"})

    fresh = InboxWorker(api.engine, settings, task_runner=stuck_task)
    stop = threading.Event()
    threading.Thread(target=_stop_once_it_beats, args=(api.engine, fresh, stop)).start()
    assert run_loop(fresh, stop, _no_jobs) is LoopEnd.STOPPED

    assert _worker_rows(api.engine) == {
        old.worker_id: {"doing": "restarted"},
        fresh.worker_id: {"doing": "stopped"},
    }
    entry = api.get("/api/health")["heartbeats"]["worker"]
    assert entry["state"] == "stopped"
    assert (entry["instance"], entry["detail"]) == (fresh.worker_id, {"doing": "stopped"})
    card = _card(api, "worker")
    assert 'class="card muted"' in card and 'data-state="stopped"' in card
    assert "not running: stopped " in card and " s ago" not in card
