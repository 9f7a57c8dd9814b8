"""The worker process's loop: drain the inbox every interval, beside the scheduled jobs, until
it is stopped or an item overruns its time limit (then the process is restarted)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum

from sqlalchemy.exc import SQLAlchemyError

from service.db import checkpoint_wal
from service.logs import RepeatedFailure, log_event
from service.models.health import ProcessRole
from service.worker.heartbeats import Ended, beat_ended
from service.worker.loop import InboxWorker

JOBS_STOP_SECONDS = 5.0  # how long a stopping worker waits for its scheduled jobs' threads
DATABASE_RETRY_CAP = 30.0  # the longest wait between drains while the database is down


class LoopEnd(StrEnum):
    STOPPED = "stopped"  # SIGTERM/SIGINT
    RESTART = "restart"  # an item's thread is stuck past its time limit: restart the process


StartJobs = Callable[[threading.Event], list[threading.Thread]]


def run_loop(worker: InboxWorker, stop: threading.Event, start_jobs: StartJobs) -> LoopEnd:
    """Drain the inbox every `mfx_worker_interval` seconds until `stop` is set (SIGTERM,
    Ctrl-C: an item still running is handed back, and the last heartbeat says `stopped`) or an
    item overruns its time limit (the last heartbeat says `restarted`).
    `start_jobs` starts the scheduled jobs (threads that stop when the event they get is set)."""
    halt = threading.Event()  # the scheduled jobs stop when the loop ends, however it ends
    jobs = start_jobs(halt)
    worker.heartbeat.start()
    log_event("worker.started", worker_id=worker.worker_id, jobs=len(jobs))
    end = LoopEnd.STOPPED
    down = RepeatedFailure("worker.database_error", "worker.database_recovered")
    try:
        while not stop.is_set():
            try:
                if worker.drain(stop).abandoned:
                    end = LoopEnd.RESTART
                    break
                checkpoint_wal(worker.engine)  # keeps WAL checkpoints off the webhook requests
            except SQLAlchemyError as exc:  # database blip: keep the loop alive, retry later
                down.failed(error=type(exc).__name__)
            else:
                down.succeeded()
            stop.wait(next_try_in(worker.settings.mfx_worker_interval, down))
    finally:
        halt.set()
        worker.heartbeat.stop()
        if (ended := _last_beat(end, stop)) is not None:  # before the jobs' wait: it may be killed
            beat_ended(worker.engine, worker.worker_id, ProcessRole.WORKER, ended)
        _join(jobs, JOBS_STOP_SECONDS)
    log_event("worker.stopped", worker_id=worker.worker_id, end=end)
    return end


def _last_beat(end: LoopEnd, stop: threading.Event) -> Ended | None:
    """`stopped` on a signal, even with a restart due (the supervisor stopping starts no
    fresh process); `restarted` for a restart: without a last beat the old instance's row
    read running ("0 s ago"), and once the fresh process was stopped the role was shown
    running with that row until MFX_HEARTBEAT_SILENCE passed. None for a crash."""
    if stop.is_set():
        return Ended.STOPPED
    return Ended.RESTARTED if end is LoopEnd.RESTART else None


def next_try_in(interval: float, down: RepeatedFailure) -> float:
    """Seconds to the next drain: the interval, or while the database is down double the
    time it has been down, at most DATABASE_RETRY_CAP (it was tried every second, each try
    a connection attempt and an ERROR line, for as long as it was down)."""
    failing_for = down.failing_for()
    if failing_for is None:
        return interval
    return max(interval, min(2 * failing_for, DATABASE_RETRY_CAP))


def _join(threads: list[threading.Thread], seconds: float) -> None:
    """Wait for the jobs' threads, in all at most `seconds`. They are daemons, but a job busy
    on a `concurrent.futures` pool's threads (the meter-event sink sends its batches on one,
    apscheduler runs the notify jobs on one) is not cut off at exit: the interpreter's exit
    waits for the work those threads hold, a batch in flight with its retries, until it ends
    or, past `STOP_GRACE_SECONDS`, the supervisor kills the process
    (`service.worker.supervisor`); a process ended at once for an abandoned item's thread
    (`os._exit`) waits for nothing. A job cut off resumes from its last acknowledged step."""
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(timeout=max(deadline - time.monotonic(), 0))
