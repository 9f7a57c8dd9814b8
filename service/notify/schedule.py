"""Scheduled notification jobs run by `meterfix worker` (see `service.worker.drain_loop`):

- digests on the DIGEST_EVERY grid (and a catch-up/retry pass every minute),
- critical alerts every few seconds,
- retention once an hour, then the open run alerts a crash left unsettled
  (`service.notify.runs.settle_open_run_alerts`).

(The heartbeat-silence check runs beside them: `service.worker.silence`, the worker's room.)

APScheduler (3.11, in-memory job store: never shared between processes) runs them in this
process. On PostgreSQL several workers run the same jobs; each pass that sends takes the
notify advisory lock, and the digest_runs rows make every window sent once anyway. A pass
whose lock was lost while it sent (its connection dropped: another worker leads now) stops
before its next send, recording nothing more, and says so (`notify.lead_lost`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from service.adapters.channels import Channel, redact, settings_secrets
from service.config import Settings
from service.db.locks import HeldLock, LockLost
from service.logs import log_event
from service.models._types import utcnow
from service.notify.critical import send_critical_alerts
from service.notify.digests import DigestSender
from service.notify.leader import leading
from service.notify.retention import purge_expired
from service.notify.runs import settle_open_run_alerts
from service.runtime import Runtime

CRITICAL_EVERY_SECONDS = 5
DIGEST_RETRY_EVERY_SECONDS = 60
RETENTION_EVERY_SECONDS = 3600


def start_notify_jobs(
    settings: Settings, stop: threading.Event, instance: str
) -> list[threading.Thread]:
    """Start the notification jobs of process `instance` (it claims digest windows by that
    name); the returned thread stops them when `stop` is set."""
    thread = threading.Thread(
        target=run_notify_jobs,
        args=(settings, stop),
        kwargs={"instance": instance},
        name="meterfix-notify",
        daemon=True,
    )
    thread.start()
    return [thread]


def run_notify_jobs(
    settings: Settings,
    stop: threading.Event,
    *,
    instance: str,
    channels: list[Channel] | None = None,
    started: threading.Event | None = None,
) -> None:
    """Run the jobs until `stop` is set (`channels` and `started` for tests)."""
    runtime = Runtime(settings)
    try:
        jobs = NotifyJobs(runtime, settings, channels, instance)
        scheduler = jobs.scheduler()
    except ValueError as exc:  # bad DIGEST_EVERY / DIGEST_TZ / SMTP_URL: say it, keep working
        log_event("notify.not_started", level=logging.ERROR, reason=str(exc))
        runtime.close()
        return
    scheduler.start()
    log_event(
        "notify.started", channels=[c.name for c in jobs.channels], every=settings.digest_every
    )
    if started is not None:
        started.set()
    stop.wait()
    scheduler.shutdown(wait=True)
    runtime.close()


class NotifyJobs:
    def __init__(
        self, runtime: Runtime, settings: Settings, channels: list[Channel] | None, instance: str
    ) -> None:
        self.runtime, self.settings = runtime, settings
        self.channels = runtime.channels if channels is None else channels
        self.digests = DigestSender(runtime.engine, settings, self.channels, instance=instance)
        self._digest_lock = threading.Lock()  # the grid job and the retry job never overlap

    def scheduler(self) -> BackgroundScheduler:
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(3)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
            timezone=self.digests.schedule.tz,
        )
        now = utcnow()
        add = scheduler.add_job
        if self.channels:
            self._add_sending_jobs(scheduler, now)
        add(
            self._guard(self.retention),
            "interval",
            seconds=RETENTION_EVERY_SECONDS,
            id="retention",
            next_run_time=now + timedelta(seconds=60),
        )
        return scheduler

    def _add_sending_jobs(self, scheduler: BackgroundScheduler, now: datetime) -> None:
        """The jobs that send (digests on their grid and catching up, critical alerts)."""
        add = scheduler.add_job
        add(self._guard(self.digest), self.digests.schedule.trigger, id="digest")
        add(
            self._guard(self.digest),
            "interval",
            seconds=DIGEST_RETRY_EVERY_SECONDS,
            id="digest-catch-up",
            next_run_time=now,
        )
        add(
            self._guard(self.critical),
            "interval",
            seconds=CRITICAL_EVERY_SECONDS,
            id="critical-alerts",
            next_run_time=now,
        )

    def digest(self) -> None:
        with self._digest_lock, self._leading(":meterfix.digest") as lock:
            if lock:
                self.digests.tick(lock)

    def critical(self) -> None:
        with self._leading(":meterfix.critical") as lock:
            if lock:
                engine, settings = self.runtime.engine, self.settings
                send_critical_alerts(engine, settings, self.channels, lock=lock)

    def retention(self) -> None:
        with self._leading(":meterfix.retention") as lock:  # a purge twice deletes nothing more
            if lock:
                purge_expired(self.runtime.engine, self.settings.mfx_retention_days)
                settle_open_run_alerts(self.runtime.engine)  # a crash left them behind

    @contextmanager
    def _leading(self, name: str) -> Iterator[HeldLock]:
        """The pass's lead (`leading`): lost while the pass sent, the pass stopped before its
        next send (`LockLost`), said here; the next pass's leader sends what is due."""
        with leading(self.runtime.engine, name) as lock:
            try:
                yield lock
            except LockLost as exc:
                log_event("notify.lead_lost", level=logging.WARNING, job=name, reason=exc.reason)

    def _guard(self, job: Callable[[], None]) -> Callable[[], None]:
        """Loop edge: a failing job (database down, a bug) is logged; the next run goes on."""
        secrets = settings_secrets(self.settings)

        def run() -> None:
            try:
                job()
            except Exception as exc:
                reason = redact(f"{type(exc).__name__}: {exc}", secrets)
                log_event("notify.job_failed", level=logging.ERROR, job=job.__name__, reason=reason)

        return run
