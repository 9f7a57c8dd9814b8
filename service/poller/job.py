"""Running the bundled poller repeatedly: the `meterfix poll` loop and the worker's job."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from handlers.records import RemediationStatus
from service.config import PollerMode, Settings
from service.logs import RepeatedFailure, log_event
from service.models import ProcessRole
from service.models._types import utcnow
from service.notify.alerts import raise_alert, resolve_alert
from service.poller.files import database_files_dirs, failed_records_files, recorded_import_sets
from service.poller.passes import PassReport, PollerDeps, build_poller_deps, run_poll_pass
from service.runtime import Runtime
from service.worker.heartbeats import BEAT_EVERY_SECONDS, Ended, beat, beat_ended

PASSES_FAILING = "poller.passes_failing"  # the critical alert's key and kind


def poll_forever(
    deps: PollerDeps,
    stop: threading.Event,
    interval: float,
    on_report: Callable[[PassReport], None] | None = None,
    failing: FailingPasses | None = None,
) -> None:
    """A pass every `interval` seconds until `stop` is set; a failing pass (database or
    bucket unreachable) is logged (`FailingPasses`: once, then every few minutes) and tried
    again at the next tick. It beats while it waits (`wait_for_next_pass`). A pass under way
    when `stop` is set ends at its next batch, and the heartbeat then says the poller stopped.
    It starts by deleting the failed-records files a finished remediation left behind."""
    deps = replace(deps, stop=stop)
    failing = failing or FailingPasses(deps.engine, deps.settings.mfx_heartbeat_silence)
    clear_remediated_files(deps.engine, deps.work_dir)
    while not stop.is_set():
        try:
            report = run_poll_pass(deps)
        except Exception as exc:  # loop edge: database, bucket or Stripe unreachable
            failing.failed(_reason(exc))
        else:
            failing.passed(ran=report.ran)
            if on_report:
                on_report(report)
        wait_for_next_pass(deps, stop, interval)
    beat_ended(deps.engine, deps.instance, ProcessRole.POLLER, Ended.STOPPED)


class FailingPasses:
    """Passes failing one after the other: logged once, then every few minutes and when they
    end (`RepeatedFailure`), and one critical alert once they have failed for longer than
    MFX_HEARTBEAT_SILENCE (`silence` s), resolved by the next pass that works. A bucket
    unreachable for hours logged an ERROR every poll interval while the poller beat
    `waiting`: no alert fired, and an operator watching alerts never knew."""

    def __init__(self, engine: Engine, silence: int) -> None:
        self.engine, self.silence = engine, silence
        self.log = RepeatedFailure("poller.pass_failed", "poller.pass_recovered")
        self.first: datetime | None = None  # when the first pass of the run failed
        self._alert_open: bool | None = None  # None: not known (raised by a process before)

    def failed(self, reason: str) -> None:
        now = utcnow()
        self.first = self.first or now
        self.log.failed(reason=reason)
        if not self._alert_open and now - self.first > timedelta(seconds=self.silence):
            self._alert_open = _alerted(lambda: self._raise(reason))

    def passed(self, *, ran: bool) -> None:
        """A pass ended without an error: it ran (this process leads), or found another
        poller's pass under way. Either way this process's passes fail no more (a standby's
        failures, never cleared, made its next single blip hours later "every pass failed
        since <hours ago>"); a pass that ran resolves the alert, whichever process raised it
        (resolved once, a leader never tried again, and a standby's alert stayed open)."""
        self.log.succeeded()
        self.first = None
        if ran:
            self._alert_open = not _alerted(lambda: resolve_alert(self.engine, PASSES_FAILING))

    def _raise(self, reason: str) -> None:
        since = f"{self.first:%Y-%m-%d %H:%M:%S} UTC"
        raise_alert(
            self.engine,
            key=PASSES_FAILING,
            severity="critical",
            kind=PASSES_FAILING,
            subject=f"poller: every pass failing for more than {self.silence} s",
            message=f"every poller pass has failed since {since}: {reason}",
            detail={"first_failure_at": self.first.isoformat() if self.first else None},
        )


def _alerted(change: Callable[[], object]) -> bool:
    """Raise or resolve the alert (`change`); False when the database would not have it."""
    try:
        change()
    except Exception as exc:  # loop edge: the database may be what fails the passes
        log_event("poller.alert_failed", level=logging.WARNING, reason=_reason(exc))
        return False
    return True


def clear_remediated_files(engine: Engine, work_dir: Path) -> int:
    """Delete the failed-records files in `work_dir` whose import set's remediation is done;
    how many. Remediation deletes its own once its run is recorded (`jobs.remediation`); these
    are the files of runs that ended before it did, or in a process that died between the two.
    The files no import set records, a pass clears (`files.clear_unrecorded_files`). The
    database's own part of `work_dir` (`database_files_dirs`: the part an earlier release
    named by the whole URL too) and, written before it had one, `work_dir` itself (the
    done import sets of this database: as before). A failure is logged: the next start
    tries again."""
    # the files, and their rows' numbers beside them
    found = failed_records_files(*database_files_dirs(work_dir, engine), work_dir)
    try:
        done = [
            path
            for s in recorded_import_sets(engine, list(found))
            if s.remediation_status == RemediationStatus.DONE
            for path in found[s.import_set_id]
        ]
    except Exception as exc:  # loop edge: the database may be down at start
        log_event("poller.clear_failed", level=logging.WARNING, reason=_reason(exc))
        return 0
    for path in done:
        path.unlink(missing_ok=True)
    if done:
        log_event("poller.remediated_files_cleared", files=len(done))
    return len(done)


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


def beat_exited(deps: PollerDeps, report: PassReport | None) -> None:
    """The last beat of a process that ran one pass and exits (`meterfix poll --once`, `poll
    --retry`): its row kept `doing: pass` (or `import` of a key), and /api/health showed the
    poller importing after the process was gone. It says the process exited and how its pass
    ended (`ran`, `skipped`: another poller's pass was under way, `failed`); no further beat
    follows, so MFX_HEARTBEAT_SILENCE later the silence alert says no poller runs, as it should
    for a poller only run by hand (its message is not the one of a poller stuck in a pass)."""
    ended = "failed" if report is None else "ran" if report.ran else "skipped"
    beat_ended(deps.engine, deps.instance, ProcessRole.POLLER, Ended.EXITED, {"pass": ended})


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
    failing = FailingPasses(runtime.engine, settings.mfx_heartbeat_silence)
    try:
        while not stop.is_set():
            try:
                deps = build_poller_deps(runtime)
            except Exception as exc:  # loop edge: a bucket or rules it cannot use yet
                failing.failed(_reason(exc))
                stop.wait(settings.mfx_poll_interval)
                continue
            poll_forever(deps, stop, settings.mfx_poll_interval, failing=failing)
    finally:
        runtime.close()


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
