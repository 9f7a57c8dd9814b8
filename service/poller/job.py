"""Running the bundled poller repeatedly: the `meterfix poll` loop and the worker's job."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from service.config import PollerMode, Settings
from service.logs import log_event
from service.poller.passes import PassReport, PollerDeps, build_poller_deps, run_poll_pass
from service.runtime import Runtime


def poll_forever(
    deps: PollerDeps,
    stop: threading.Event,
    interval: float,
    on_report: Callable[[PassReport], None] | None = None,
) -> None:
    """A pass every `interval` seconds until `stop` is set; a failing pass (database or
    bucket unreachable) is logged and tried again at the next tick."""
    while not stop.is_set():
        try:
            report = run_poll_pass(deps)
        except Exception as exc:  # loop edge: database, bucket or Stripe unreachable
            log_event("poller.pass_failed", level=logging.ERROR, reason=_reason(exc))
        else:
            if on_report:
                on_report(report)
        stop.wait(interval)


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
