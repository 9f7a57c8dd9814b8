"""The inbox worker: claim due events, fetch what thin events point to, dispatch, record.

Processing is at-least-once with idempotent effects: the handler's writes and the row's
`done` commit in one transaction. Failures are retried with backoff
(`service.worker.inbox_claims`) and dead-lettered with an alert after `MFX_MAX_ATTEMPTS`; an
event whose data cannot be used (`UnusableEvent`) or a task whose input is gone is
dead-lettered at once. While an item runs, the heartbeat renews its lease; it may run
`MFX_TASK_TIME_LIMIT` seconds (`service.worker.liveness` says how that limit is enforced).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import stripe
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from handlers import handler_for
from handlers.errors import UnusableEvent
from service.adapters.stripe_events import fetch_full_event
from service.config import Settings
from service.db import session_scope
from service.db.schema import check_schema
from service.errors import (
    EventUnreadable,
    ItemInterrupted,
    LeaseLost,
    TaskInputMissing,
    TimeLimitExceeded,
)
from service.jobs.store.runs import fail_task_runs
from service.logs import log_event
from service.models.inbox import InboxStatus, PayloadStyle
from service.runtime import Runtime
from service.worker.handler_context import DatabaseHandlerContext
from service.worker.heartbeats import new_instance_id
from service.worker.inbox_claims import (
    ERROR_TEXT_LIMIT,
    ClaimedEvent,
    claim_next,
    dead_letter_alert,
    mark_done,
    mark_failed,
    release_claim,
    storable,
)
from service.worker.item_lease import item_lease
from service.worker.liveness import (
    ITEM_THREAD_PREFIX,
    WorkerHeartbeat,
    call_with_time_limit,
    heartbeat_interval,
)
from service.worker.task_runner import TaskRunner
from service.worker.tasks import TASK_STYLE, TaskKind, parse_task

TaskRunnerFn = Callable[[TaskKind, str], str]

# The worker does its own retries with backoff; one quick SDK retry smooths over blips.
STRIPE_NETWORK_RETRIES = 1
# Failures retrying cannot help: dead-lettered at once with their reason.
PERMANENT_FAILURES: tuple[type[Exception], ...] = (UnusableEvent, TaskInputMissing, EventUnreadable)
DIED_WHILE_WORKING = (
    "the worker processing it stopped without finishing on its last attempt "
    "(killed, crashed, or stuck past its time limit)"
)


@dataclass
class PassReport:
    """What one pass over the due events did."""

    done: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    retrying: list[tuple[str, str]] = field(default_factory=list)  # (event id, error)
    dead: list[tuple[str, str]] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)  # handed back on stop, not counted
    # its lease lost (another worker took it over): nothing recorded, that worker does it
    given_up: list[str] = field(default_factory=list)
    # An item ran past its time limit, or its lease was lost, and its thread still runs: the
    # pass ends there and `meterfix worker` restarts its process (`service.worker.liveness`).
    abandoned: bool = False

    @property
    def failed(self) -> list[tuple[str, str]]:
        return self.retrying + self.dead


def new_worker_id() -> str:
    return new_instance_id()


class InboxWorker:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        stripe_client: stripe.StripeClient | None = None,
        worker_id: str | None = None,
        task_runner: TaskRunnerFn | None = None,
        hard_time_limit: bool = False,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.worker_id = worker_id or new_worker_id()
        self.lease = timedelta(seconds=settings.mfx_worker_lease)
        self.heartbeat = WorkerHeartbeat(
            engine, self.worker_id, heartbeat_interval(settings.mfx_worker_lease)
        )
        self.hard_time_limit = hard_time_limit  # the CLI arms the GIL-proof watchdog too
        # Its own adapters: the worker retries with backoff itself, so the SDK retries less.
        self.runtime = Runtime(
            settings,
            engine=engine,
            stripe_client=stripe_client,
            stripe_network_retries=STRIPE_NETWORK_RETRIES,
        )
        self._task_runner = task_runner

    @property
    def stripe_client(self) -> stripe.StripeClient:
        return self.runtime.stripe_client

    @property
    def task_runner(self) -> TaskRunnerFn:
        if self._task_runner is None:
            self._task_runner = TaskRunner(self.runtime)
        return self._task_runner

    def check_database(self) -> None:
        """Raises SQLAlchemyError when the database is unreachable, SchemaNotCurrent when
        it was never migrated or is behind this code."""
        check_schema(self.engine)

    def drain(self, stop: threading.Event | None = None) -> PassReport:
        """Process everything due now; failures are rescheduled, never waited for. With
        `stop`, an item still running when it is set is handed back (due at once)."""
        report = PassReport()
        owns_heartbeat = self.heartbeat.start()
        try:
            while (stop is None or not stop.is_set()) and not report.abandoned:
                claimed = claim_next(self.engine, self.worker_id, self.lease)
                if claimed is None:
                    break
                self.process(claimed, report, stop)
        finally:
            if owns_heartbeat:
                self.heartbeat.stop()
        return report

    def process(
        self, claimed: ClaimedEvent, report: PassReport, stop: threading.Event | None = None
    ) -> None:
        log_event("inbox.claimed", event_id=claimed.event_id, attempt=claimed.attempts)
        # Past the limit and taken over: it keeps killing workers. Past it after a recorded
        # failure (the limit was lowered since), it gets its next attempt, whose failure is
        # its last (`_fail`): never dead-lettered unrun for a death that did not happen.
        if claimed.taken_over and claimed.attempts > self.settings.mfx_max_attempts:
            self._fail(claimed, DIED_WHILE_WORKING, report)
            return
        lease = item_lease(self.engine, claimed, self.worker_id)
        try:
            with self.heartbeat.working_on(claimed, lease):
                status, outcome = call_with_time_limit(
                    lambda: self._dispatch(claimed),
                    self.settings.mfx_task_time_limit,
                    name=f"{ITEM_THREAD_PREFIX}{claimed.row_id}",
                    stop=stop,
                    hard_limit=self.hard_time_limit,
                    lease=lease,
                )
        except ItemInterrupted:
            self._hand_back(claimed, report)
        except LeaseLost as exc:
            self._give_up(claimed, exc.reason, report, left_running=lease.left_running)
        except TimeLimitExceeded as exc:
            report.abandoned = True
            self._fail(claimed, exc.reason, report)
        except PERMANENT_FAILURES as exc:
            self._fail(claimed, _permanent_reason(exc), report, permanent=True)
        except Exception as exc:  # loop edge: any failure is recorded and retried
            self._fail(claimed, f"{type(exc).__name__}: {exc}", report)
        else:
            (report.done if status is InboxStatus.DONE else report.ignored).append(claimed.event_id)
            log_event("inbox.processed", event_id=claimed.event_id, status=status, outcome=outcome)

    def _dispatch(self, claimed: ClaimedEvent) -> tuple[InboxStatus, str]:
        if claimed.style == TASK_STYLE:  # remediation: files move, so no open transaction
            outcome = self.task_runner(*parse_task(claimed.body))
            return self._finish(claimed, InboxStatus.DONE, lambda _: outcome)
        handler = handler_for(claimed.event_type)
        if handler is None:  # a replayed unknown type: never fetched
            return self._finish(claimed, InboxStatus.IGNORED, lambda _: "no handler for its type")
        event = self._full_event(claimed)
        return self._finish(claimed, InboxStatus.DONE, lambda ctx: str(handler(event, ctx)))

    def _full_event(self, claimed: ClaimedEvent) -> Mapping[str, Any]:
        if claimed.style == PayloadStyle.THIN:
            return fetch_full_event(self.stripe_client, claimed.body)
        event: Mapping[str, Any] = json.loads(claimed.body)
        return event

    def _finish(
        self,
        claimed: ClaimedEvent,
        status: InboxStatus,
        work: Callable[[DatabaseHandlerContext], str],
    ) -> tuple[InboxStatus, str]:
        """Run the handler and mark the row in ONE transaction (all or nothing)."""
        with session_scope(self.engine) as session:
            outcome = work(DatabaseHandlerContext(session))
            if not mark_done(session.connection(), claimed, self.worker_id, outcome, status):
                raise LeaseLost(f"lease on {claimed.event_id} was lost; rolled back")
        return status, outcome

    def _fail(
        self, claimed: ClaimedEvent, error: str, report: PassReport, *, permanent: bool = False
    ) -> None:
        dead = permanent or claimed.attempts >= self.settings.mfx_max_attempts
        error = storable(error)
        next_at = None
        try:
            with self.engine.begin() as connection:
                owned, next_at, dead = mark_failed(
                    connection, claimed, self.worker_id, error, dead, permanent=permanent
                )
                if owned and dead:
                    dead_letter_alert(connection, claimed, error, permanent=permanent)
                    if claimed.style == TASK_STYLE:  # its runs end with it
                        fail_task_runs(connection, claimed.event_id, f"dead-lettered: {error}")
        except SQLAlchemyError as exc:  # the lease will expire and the row be retried
            log_event("inbox.record_failure_failed", level=logging.ERROR, error=type(exc).__name__)
        (report.dead if dead else report.retrying).append((claimed.event_id, error))
        log_event(
            "inbox.dead_lettered" if dead else "inbox.failed",
            level=logging.ERROR if dead else logging.WARNING,
            event_id=claimed.event_id,
            event_type=claimed.event_type,
            attempt=claimed.attempts,
            # as the inbox row holds it: an SDK error quoting a whole response body (hundreds
            # of KB of a fetched event's rows) went into every attempt's log line
            reason=error[:ERROR_TEXT_LIMIT],
            permanent=permanent,
            next_attempt_at=None if dead else next_at,
        )

    def _give_up(
        self, claimed: ClaimedEvent, reason: str, report: PassReport, *, left_running: bool
    ) -> None:
        """Its lease lost: another worker holds the item and does it (or finds what was
        done), so nothing of this attempt is recorded. Its thread, `left_running`, is left
        behind and the process restarts to end it, as past a time limit."""
        report.given_up.append(claimed.event_id)
        report.abandoned = report.abandoned or left_running
        log_event(
            "inbox.given_up",
            level=logging.WARNING,
            event_id=claimed.event_id,
            attempt=claimed.attempts,
            reason=reason,
            restarting=report.abandoned,
        )

    def _hand_back(self, claimed: ClaimedEvent, report: PassReport) -> None:
        """Stopping mid-item: give the row back, due now, so the next worker takes it at
        once (its abandoned thread can no longer commit: the row is not ours)."""
        try:
            release_claim(self.engine, claimed, self.worker_id)
        except SQLAlchemyError as exc:  # the lease expires instead
            log_event("inbox.release_failed", level=logging.ERROR, error=type(exc).__name__)
        report.interrupted.append(claimed.event_id)
        log_event("inbox.interrupted", level=logging.WARNING, event_id=claimed.event_id)


def _permanent_reason(exc: Exception) -> str:
    if isinstance(exc, UnusableEvent):
        return f"unusable event: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
