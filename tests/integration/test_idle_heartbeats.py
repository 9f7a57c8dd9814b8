"""An idle poller between passes: alive, so it beats. Real parts: the poll loop
(`poll_forever`) over a `file://` bucket, the worker's silence watch, SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import Session

from service.config import Settings
from service.models._types import as_utc
from service.models.alerts import Alert
from service.models.health import Heartbeat
from service.poller.job import poll_forever
from service.poller.passes import PassReport, build_poller_deps
from service.runtime import Runtime
from service.worker import silence


def test_an_idle_poller_keeps_beating_between_passes_and_raises_no_silence_alert(
    db_url: str,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The poller beat only during a pass, then waited MFX_POLL_INTERVAL in silence: with an
    interval at or past MFX_HEARTBEAT_SILENCE (polling every 10 minutes, silence 5), the
    watch raised the critical `heartbeat.silent:poller` alert every cycle and resolved it at
    the next pass, for a healthy poller. It beats while it waits (`doing: waiting`, the
    next pass's time), without listing the bucket more often, and a stop ends the wait."""
    monkeypatch.setattr(silence, "CHECK_EVERY_SECONDS", 0.1)
    (tmp_path / "bucket").mkdir()
    settings = make_settings(
        database_url=db_url, mfx_poller="index", mfx_poll_interval=3, mfx_heartbeat_silence=2
    )
    runtime = Runtime(settings)
    engine = runtime.engine
    passes: list[float] = []

    def on_report(report: PassReport) -> None:
        assert report.ran, report
        passes.append(time.monotonic())

    stop, halt_watch = threading.Event(), threading.Event()
    poller = threading.Thread(
        target=poll_forever,
        args=(build_poller_deps(runtime), stop, settings.mfx_poll_interval, on_report),
        daemon=True,
    )
    watch = silence.start_silence_watch(engine, settings, halt_watch)
    samples: list[tuple[Any, dict[str, Any]]] = []
    try:
        poller.start()
        deadline = time.monotonic() + 10
        while not passes and time.monotonic() < deadline:
            time.sleep(0.02)
        assert passes, "the first pass never ran"
        while time.monotonic() < passes[0] + 2.7:  # past the silence, before the next pass
            with Session(engine) as session:
                row = session.exec(select(Heartbeat.last_beat_at, Heartbeat.detail)).one()  # type: ignore[call-overload]
            samples.append((as_utc(row.last_beat_at), dict(row.detail or {})))
            time.sleep(0.1)
    finally:
        stop.set()
        asked = time.monotonic()
        poller.join(5)
        stopped_after = time.monotonic() - asked
        halt_watch.set()
        watch.join(5)
    with Session(engine) as session:
        alerts = session.exec(select(Alert.alert_key, Alert.status)).all()  # type: ignore[call-overload]
    runtime.close()
    assert [tuple(a) for a in alerts] == []
    # the bucket was not listed more often: a pass per interval (the sampling, slow under
    # load, may run past the next pass's time)
    gaps = [later - earlier for earlier, later in pairwise(passes)]
    assert all(gap >= settings.mfx_poll_interval - 0.2 for gap in gaps), passes
    waiting = [(at, detail) for at, detail in samples if detail.get("doing") == "waiting"]
    assert len({at for at, _ in waiting}) >= 3, samples  # beat again and again while waiting
    assert len({detail.get("next_pass_at") for _, detail in waiting}) == 1, waiting
    assert not poller.is_alive() and stopped_after < 1.0, stopped_after
