"""Running the bundled poller repeatedly: the `meterfix poll` loop and the worker's job."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

from service.config import PollerMode, Settings
from service.logs import log_event
from service.models import ProcessRole
from service.models._types import utcnow
from service.poller.passes import PassReport, PollerDeps, build_poller_deps, run_poll_pass
from service.runtime import Runtime
from service.worker.heartbeats import BEAT_EVERY_SECONDS, beat


def poll_forever(
    deps: PollerDeps,
    stop: threading.Event,
    interval: float,
    on_report: Callable[[PassReport], None] | None = None,
) -> None:
    """A pass every `interval` seconds until `stop` is set; a failing pass (database or
    bucket unreachable) is logged and tried again at the next tick. It beats while it waits
    (`wait_for_next_pass`). A pass under way when `stop` is set ends at its next batch, and
    the heartbeat then says the poller stopped."""
    deps = replace(deps, stop=stop)
    while not stop.is_set():
        try:
            report = run_poll_pass(deps)
        except Exception as exc:  # loop edge: database, bucket or Stripe unreachable
            log_event("poller.pass_failed", level=logging.ERROR, reason=_reason(exc))
        else:
            if on_report:
                on_report(report)
        wait_for_next_pass(deps, stop, interval)
    _beat(deps, {"doing": "stopped"})


def wait_for_next_pass(deps: PollerDeps, stop: threading.Event, interval: float) -> None:
    """Wait `interval` seconds (no longer once `stop` is set), beating as it waits: a pass
    beats only while it runs, so a poller waiting MFX_POLL_INTERVAL >= MFX_HEARTBEAT_SILENCE
    between passes raised the critical `heartbeat.silent:poller` alert every cycle, healthy.
    The bucket is listed no more often; a failing beat never ends the loop."""
    every = waiting_beat_period(deps.settings)
    deadline = time.monotonic() + interval
    next_pass_at = (utcnow() + timedelta(seconds=interval)).isoformat()
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        _beat_waiting(deps, next_pass_at)
        stop.wait(min(every, left))


def waiting_beat_period(settings: Settings) -> float:
    """Seconds between the beats of a waiting poller: every BEAT_EVERY_SECONDS, and at least
    three times per MFX_HEARTBEAT_SILENCE (a silence set shorter still sees it alive)."""
    return min(BEAT_EVERY_SECONDS, settings.mfx_heartbeat_silence / 3)


def start_poller_job(settings: Settings, stop: threading.Event) -> threading.Thread | None:
    """For `meterfix worker` (see `service.commands.intake.start_scheduled_jobs`): a thread running
    the poller until `stop` is set, or None when MFX_POLLER=off. On PostgreSQL every worker
    may start it: each pass takes the poller advisory lock, so one instance polls at a time."""
    if settings.mfx_poller == PollerMode.OFF:
        return None
    thread = threading.Thread(
        target=_run_job, args=(settings, stop), name="meterfix-poller", daemon=True
    )
    thread.start()
    log_event(
        "poller.job_started", mode=str(settings.mfx_poller), interval=settings.mfx_poll_interval
    )
    return thread


def _beat_waiting(deps: PollerDeps, next_pass_at: str) -> None:
    _beat(deps, {"doing": "waiting", "next_pass_at": next_pass_at})


def _beat(deps: PollerDeps, detail: dict[str, str]) -> None:
    """One heartbeat of this poller instance; a failing beat never ends the loop (the
    database may be briefly unavailable: the next one tries again)."""
    try:
        beat(deps.engine, deps.instance, ProcessRole.POLLER, detail)
    except Exception as exc:  # loop edge: as a pass's own beat (`pass_objects.beat`)
        log_event("poller.heartbeat_failed", level=logging.WARNING, reason=type(exc).__name__)


def _run_job(settings: Settings, stop: threading.Event) -> None:
    """The worker's poller thread: what a pass needs is built again until it can be (a
    thread that failed on it died unseen, never beating: no file imported, no alert)."""
    runtime = Runtime(settings)
    try:
        while not stop.is_set():
            try:
                deps = build_poller_deps(runtime)
            except Exception as exc:  # loop edge: a bucket or rules it cannot use yet
                log_event("poller.pass_failed", level=logging.ERROR, reason=_reason(exc))
                stop.wait(settings.mfx_poll_interval)
                continue
            poll_forever(deps, stop, settings.mfx_poll_interval)
    finally:
        runtime.close()


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
