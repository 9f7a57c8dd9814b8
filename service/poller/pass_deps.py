"""What one poller pass is given (`PollerDeps`: adapters, settings, limits, hooks) and what it
reports (`PassReport`), apart from the pass (service.poller.passes) and the objects it takes
(service.poller.pass_objects): both read them, and passes.py still exports them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from remediation.limits import DEFAULT_LIMITS, FieldLimits
from remediation.ports import Bucket, MeterEventSink, MeterSource
from service.config import PollerMode, Settings
from service.db.locks import HeldLock
from service.models._types import utcnow
from service.poller.handover import FailedRowsHook, log_failed_rows
from service.poller.planning import PassLimits
from service.worker.heartbeats import new_instance_id

Progress = Callable[[int, int, str], None]


@dataclass
class PollerDeps:
    engine: Engine
    settings: Settings
    bucket: Bucket
    meters: MeterSource | None
    sink: MeterEventSink | None  # None in index mode
    work_dir: Path
    on_failed_rows: FailedRowsHook = log_failed_rows
    clock: Callable[[], datetime] = utcnow
    progress: Progress | None = None
    limits: PassLimits = field(default_factory=PassLimits)
    instance: str = field(default_factory=new_instance_id)  # this process, for heartbeats
    only: Container[tuple[str, str]] | None = None  # (key, etag): `poll --retry` takes these
    field_limits: FieldLimits = DEFAULT_LIMITS  # MFX_RULES [policy]: the same as remediation
    # MFX_RULES [policy] value_precision (`Rules.value_precision`): a value past it is refused
    # as remediation refuses it (the poller sent `1.234` that `validate` refused; None: none)
    value_precision: int | None = None
    # set when the process is stopping (SIGTERM, Ctrl-C): a pass under way takes no further
    # object, and an import no further batch (`ObjectImport.stopping`)
    stop: threading.Event | None = None
    # the poller lock the pass holds (`run_poll_pass`): checked before each batch sent, and
    # fencing the transactions that record what was sent; lost, the pass stops
    lock: HeldLock = field(default_factory=lambda: HeldLock(True, "poller"))

    @property
    def index_mode(self) -> bool:
        return self.settings.mfx_poller == PollerMode.INDEX

    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()


@dataclass
class PassReport:
    ran: bool = True  # False: another instance holds the poller lock
    stopped: bool = False  # the process was stopping, or the lock was lost: ended part-way
    # the poller lock went with its connection mid-pass: it stopped sending (another process
    # may hold the lock now and resumes after the acknowledged batches)
    lock_lost: bool = False
    mode: str = "import"
    listed: int = 0
    imported: int = 0
    indexed: int = 0
    failed_files: int = 0  # unreadable files (whole-file failures), not retried
    retry_files: int = 0  # errors (Stripe, S3, ...): the object is retried after a backoff
    gave_up: int = 0  # of retry_files: given up (critical alert; `poll --retry KEY`)
    skipped: int = 0
    deferred: int = 0
    waiting: int = 0  # failing objects still backing off
    rows: int = 0
    sent: int = 0  # rows Stripe accepted in the files imported (earlier passes' share included)
    left_out: int = 0  # of sent: rows another object version sent, or meterfix corrected, before
    failed_rows: int = 0
    # error reports that matched none of our rows when they came, and now do (their rows
    # recorded by this pass): remediation queued
    reports_matched: int = 0
    errors: list[str] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)  # the objects whose version it recorded
