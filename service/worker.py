"""The inbox worker: claim due events, fetch what thin events point to, dispatch, record.

Processing is at-least-once with idempotent effects: the handler's writes and the row's
`done` commit in one transaction. Failures are retried with backoff (`service.inbox`) and
dead-lettered with an alert after `MFX_MAX_ATTEMPTS`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import stripe
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from handlers import handler_for
from service.adapters.stripe_client import build_stripe_client
from service.adapters.stripe_events import fetch_full_event
from service.config import Settings
from service.db import checkpoint_wal, session_scope
from service.handler_context import DatabaseHandlerContext
from service.inbox import (
    INBOX,
    ClaimedEvent,
    claim_next,
    dead_letter_alert,
    mark_done,
    mark_failed,
)
from service.logs import log_event
from service.models.inbox import InboxStatus, PayloadStyle
from service.remediation_tasks import TASK_STYLE, TaskKind, parse_task

TaskRunnerFn = Callable[[TaskKind, str], str]

# The worker does its own retries with backoff; one quick SDK retry smooths over blips.
STRIPE_NETWORK_RETRIES = 1


class LeaseLost(RuntimeError):
    """Another worker took the row over (our lease expired): our writes are rolled back."""


@dataclass
class PassReport:
    """What one pass over the due events did."""

    done: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    retrying: list[tuple[str, str]] = field(default_factory=list)  # (event id, error)
    dead: list[tuple[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> list[tuple[str, str]]:
        return self.retrying + self.dead


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class InboxWorker:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        stripe_client: stripe.StripeClient | None = None,
        worker_id: str | None = None,
        task_runner: TaskRunnerFn | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.worker_id = worker_id or new_worker_id()
        self.lease = timedelta(seconds=settings.mfx_worker_lease)
        self._client = stripe_client
        self._task_runner = task_runner

    @property
    def stripe_client(self) -> stripe.StripeClient:
        if self._client is None:
            self._client = build_stripe_client(
                self.settings, max_network_retries=STRIPE_NETWORK_RETRIES
            )
        return self._client

    @property
    def task_runner(self) -> TaskRunnerFn:
        if self._task_runner is None:
            from service.wiring import TaskRunner

            self._task_runner = TaskRunner(self.settings, self.engine, self.stripe_client)
        return self._task_runner

    def check_database(self) -> None:
        """Raises SQLAlchemyError when the database is unreachable or not migrated."""
        with self.engine.connect() as connection:
            connection.execute(select(INBOX.c.id).limit(1))

    def drain(self, stop: threading.Event | None = None) -> PassReport:
        """Process everything due now; failures are rescheduled, never waited for."""
        report = PassReport()
        while stop is None or not stop.is_set():
            claimed = claim_next(self.engine, self.worker_id, self.lease)
            if claimed is None:
                break
            self.process(claimed, report)
        return report

    def process(self, claimed: ClaimedEvent, report: PassReport) -> None:
        log_event("inbox.claimed", event_id=claimed.event_id, attempt=claimed.attempts)
        try:
            status, outcome = self._dispatch(claimed)
        except Exception as exc:  # loop edge: any failure is recorded and retried
            self._fail(claimed, f"{type(exc).__name__}: {exc}", report)
            return
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

    def _fail(self, claimed: ClaimedEvent, error: str, report: PassReport) -> None:
        dead = claimed.attempts >= self.settings.mfx_max_attempts
        try:
            with self.engine.begin() as connection:
                next_at = mark_failed(connection, claimed, self.worker_id, error, dead)
                if dead:
                    dead_letter_alert(connection, claimed, error)
        except SQLAlchemyError as exc:  # the lease will expire and the row be retried
            log_event("inbox.record_failure_failed", level=logging.ERROR, error=type(exc).__name__)
        (report.dead if dead else report.retrying).append((claimed.event_id, error))
        log_event(
            "inbox.dead_lettered" if dead else "inbox.failed",
            level=logging.ERROR if dead else logging.WARNING,
            event_id=claimed.event_id,
            event_type=claimed.event_type,
            attempt=claimed.attempts,
            reason=error,
            next_attempt_at=None if dead else next_at,
        )


def start_scheduled_jobs(settings: Settings, stop: threading.Event) -> list[threading.Thread]:
    """HOOK for scheduled jobs (bundled poller, digests) run by `meterfix worker`.

    Start each job here as a thread that loops until `stop` is set and return the threads;
    the worker joins them on shutdown. With several workers on PostgreSQL, a job should
    first take the leader advisory lock (DESIGN.md "Scale"): the poller does, per pass.
    """
    from service.notify.schedule import start_notify_jobs
    from service.poller_job import start_poller_job

    poller = start_poller_job(settings, stop)
    return ([poller] if poller is not None else []) + start_notify_jobs(settings, stop)


def run_loop(worker: InboxWorker, stop: threading.Event) -> None:
    """Drain the inbox every `mfx_worker_interval` seconds until `stop` is set (SIGTERM)."""
    jobs = start_scheduled_jobs(worker.settings, stop)
    log_event("worker.started", worker_id=worker.worker_id, jobs=len(jobs))
    while not stop.is_set():
        try:
            worker.drain(stop)
            checkpoint_wal(worker.engine)  # keeps WAL checkpoints off the webhook requests
        except SQLAlchemyError as exc:  # database blip: keep the loop alive, retry next tick
            log_event("worker.database_error", level=logging.ERROR, error=type(exc).__name__)
        stop.wait(worker.settings.mfx_worker_interval)
    for job in jobs:
        job.join(timeout=30)
    log_event("worker.stopped", worker_id=worker.worker_id)
