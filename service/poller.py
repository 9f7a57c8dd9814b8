"""The bundled poller, service side: one pass lists the bucket, imports new usage files as
Stripe meter events (or, with MFX_POLLER=index, only records identifier -> (object, row)).

Crash safety: a bucket object stays `seen` until every batch of it went out; only then is it
marked `imported`. A crash mid-file therefore re-reads and re-sends the whole file on the next
pass. That never bills twice: every event carries an identifier (the row's own, or one derived
from the object version and row number), and Stripe dedupes identifiers for at least 24 hours.
Failed rows go to a failed-records file (usage columns + error_code + error_message) and to the
`on_failed_rows(import_set, path)` hook, which hands them to remediation.

On PostgreSQL one instance polls at a time (`pg_try_advisory_lock`); a pass that cannot get
the lock is skipped. SQLite means a single process.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import Engine

from remediation.errors import UnreadableFile
from remediation.formats import detect_format, read_records
from remediation.poller import (
    ImportChunk,
    PassLimits,
    RowRef,
    import_chunks,
    index_chunks,
    plan_pass,
    source_tag,
)
from remediation.ports import Bucket, MeterEventSink, MeterSource, ObjectInfo
from remediation.validation import MeterIndex
from service.config import PollerMode, Settings
from service.logs import log_event
from service.models import ObjectStatus
from service.models._types import utcnow
from service.poller_files import FailedRecords, failed_records_path
from service.poller_handover import (
    FailedRowsHook,
    hand_over,
    log_failed_rows,
    queue_pending_remediation,
    remediation_hook,
)
from service.poller_lock import POLLER_LOCK_KEY, poller_lock
from service.poller_store import PollerStore

CHUNKS_PER_GROUP = 10  # 10 stream requests sent concurrently, then their rows recorded

Progress = Callable[[int, int, str], None]


@runtime_checkable
class BatchSender(Protocol):
    def send_batches(self, batches: Iterable[Sequence[Mapping[str, Any]]]) -> int: ...


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

    @property
    def index_mode(self) -> bool:
        return self.settings.mfx_poller == PollerMode.INDEX


@dataclass
class PassReport:
    ran: bool = True  # False: another instance holds the poller lock
    mode: str = "import"
    listed: int = 0
    imported: int = 0
    indexed: int = 0
    failed_files: int = 0  # unreadable files (whole-file failures), not retried
    retry_files: int = 0  # errors (Stripe, S3, ...): the object is retried on the next pass
    skipped: int = 0
    deferred: int = 0
    rows: int = 0
    sent: int = 0
    failed_rows: int = 0
    errors: list[str] = field(default_factory=list)


def build_poller_deps(runtime: Any, *, progress: Progress | None = None) -> PollerDeps:
    """Adapters for a Runtime (settings + engine): bucket, meters and the event stream."""
    from service.adapters.bucket import open_bucket
    from service.adapters.meter_events import StripeMeterEventSink
    from service.adapters.stripe_client import build_stripe_client
    from service.adapters.stripe_meters import StripeMeterSource

    settings: Settings = runtime.settings
    client = build_stripe_client(settings)
    index = settings.mfx_poller == PollerMode.INDEX
    return PollerDeps(
        engine=runtime.engine,
        settings=settings,
        bucket=open_bucket(settings),
        meters=None if index else StripeMeterSource(client),
        sink=None if index else StripeMeterEventSink(client, settings),
        work_dir=Path(settings.mfx_work_dir).absolute() / "poller",
        on_failed_rows=remediation_hook(runtime.engine),
        progress=progress,
    )


def run_poll_pass(target: Any) -> PassReport:
    """One pass. `target` is PollerDeps, or a Runtime (adapters are then built for it)."""
    deps = target if isinstance(target, PollerDeps) else build_poller_deps(target)
    with poller_lock(deps.engine) as acquired:
        if not acquired:
            log_event("poller.pass_skipped", reason="another instance holds the poller lock")
            return PassReport(ran=False)
        if not deps.index_mode:
            queue_pending_remediation(deps.engine)
        report = _run_pass(deps)
    log_event("poller.pass", **{k: v for k, v in vars(report).items() if k != "errors"})
    return report


def _run_pass(deps: PollerDeps) -> PassReport:
    store = PollerStore(deps.engine)
    report = PassReport(mode="index" if deps.index_mode else "import")
    listed = list(deps.bucket.list_objects())
    seen, first_sync = store.seen()
    excluded = [deps.bucket.prefix + _dir(deps.settings.mfx_quarantine_prefix)]
    plan = plan_pass(
        listed,
        seen,
        now=deps.clock(),
        first_sync=first_sync,
        excluded_prefixes=excluded,
        limits=deps.limits,
    )
    report.listed, report.skipped, report.deferred = len(listed), len(plan.skip), plan.deferred
    store.record_skipped(plan.skip)
    meters = MeterIndex(deps.meters.meters()) if deps.meters and not deps.index_mode else None
    for number, obj in enumerate(plan.take, start=1):
        _process_object(deps, store, obj, meters, report)
        if deps.progress:
            deps.progress(number, len(plan.take), obj.key)
    return report


def _process_object(
    deps: PollerDeps, store: PollerStore, obj: ObjectInfo, meters: MeterIndex | None, r: PassReport
) -> None:
    attempt = store.claim(obj)
    try:
        if meters is None or deps.sink is None:
            r.rows += _index_object(deps, store, obj)
            r.indexed += 1
        else:
            _import_object(deps, store, obj, meters, deps.sink, r)
            r.imported += 1
    except UnreadableFile as exc:
        store.mark_unreadable(obj, exc.reason, None if deps.index_mode else _impset_id(obj))
        r.failed_files += 1
        r.errors.append(f"{obj.key}: {exc.reason}")
        log_event("poller.unreadable", level=logging.WARNING, key=obj.key, reason=exc.reason)
    except Exception as exc:  # loop edge: one object's failure must not stop the pass
        reason = f"{type(exc).__name__}: {exc}"
        give_up = attempt >= deps.settings.mfx_max_attempts
        store.mark_error(obj, reason, give_up)
        if give_up:
            _give_up_alert(deps, obj, attempt, reason)
        r.retry_files += 1
        r.errors.append(f"{obj.key}: {reason}")
        log_event("poller.object_failed", level=logging.ERROR, key=obj.key, reason=reason)


def _give_up_alert(deps: PollerDeps, obj: ObjectInfo, attempts: int, reason: str) -> None:
    from service.alerts import raise_alert

    raise_alert(
        deps.engine,
        key=f"poller.gave_up:{obj.key}:{obj.etag}",
        severity="critical",
        kind="poller.gave_up",
        subject=f"{obj.key}: import failed {attempts} times; the poller gave up",
        message=f"{reason[:1000]} (rows sent before the failure carry their identifiers; "
        "re-upload the object under a new key once the cause is fixed)",
        detail={"key": obj.key, "etag": obj.etag},
    )


def _index_object(deps: PollerDeps, store: PollerStore, obj: ObjectInfo) -> int:
    rows = 0
    with deps.bucket.open_read(obj.key) as stream:
        for refs in index_chunks(read_records(stream, detect_format(obj.key))):
            store.insert_rows(obj, refs)
            rows += len(refs)
    store.mark_done(obj, ObjectStatus.INDEXED, rows=rows, sent=0, failed=0, import_set_id=None)
    return rows


def _import_object(
    deps: PollerDeps,
    store: PollerStore,
    obj: ObjectInfo,
    meters: MeterIndex,
    sink: MeterEventSink,
    report: PassReport,
) -> None:
    impset_id = _impset_id(obj)
    fmt = detect_format(obj.key)
    path = failed_records_path(deps.work_dir, impset_id, fmt)
    now = int(deps.clock().timestamp())
    rows = sent = failed = 0
    with deps.bucket.open_read(obj.key) as stream, FailedRecords(path, fmt) as failed_out:
        records = failed_out.open_records(stream)
        chunks = import_chunks(records, meters, now=now, tag=source_tag(obj.key, obj.etag))
        while group := list(islice(chunks, CHUNKS_PER_GROUP)):
            sent += _send(sink, [chunk.events for chunk in group if chunk.events])
            refs = [ref for chunk in group for ref in chunk.rows]
            store.insert_rows(obj, refs)
            failed += failed_out.write(chunk.failed for chunk in group)
            rows += _row_count(group)
    import_set = store.finish_import(obj, impset_id, rows=rows, sent=sent, failed=failed, path=path)
    report.rows, report.sent, report.failed_rows = (
        report.rows + rows,
        report.sent + sent,
        report.failed_rows + failed,
    )
    if failed:
        hand_over(deps.on_failed_rows, import_set, path)
    else:
        path.unlink(missing_ok=True)


def _row_count(group: list[ImportChunk]) -> int:
    return sum(len(chunk.rows) for chunk in group)


def _send(sink: MeterEventSink, batches: list[list[dict[str, object]]]) -> int:
    if isinstance(sink, BatchSender):
        return sink.send_batches(batches)
    for batch in batches:
        sink.send(batch)
    return sum(len(batch) for batch in batches)


def _impset_id(obj: ObjectInfo) -> str:
    digest = hashlib.sha256(f"{obj.key}\n{obj.etag}".encode()).hexdigest()[:24]
    return f"impset_local_{digest}"


def _dir(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


__all__ = [
    "POLLER_LOCK_KEY",
    "FailedRowsHook",
    "PassReport",
    "PollerDeps",
    "Progress",
    "RowRef",
    "build_poller_deps",
    "log_failed_rows",
    "poller_lock",
    "queue_pending_remediation",
    "run_poll_pass",
]
