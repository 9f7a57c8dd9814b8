"""The bundled poller, service side: one pass lists the bucket, imports new usage files as
Stripe meter events (or, with MFX_POLLER=index, only records identifier -> (object, row)).

Crash safety: a bucket object stays `seen` until every batch of it was acknowledged; only
then is it marked `imported`. A pass resumes after the batches Stripe acknowledged
(service.poller.importer), so a crash re-sends at most the batches in flight, under the same
identifiers (the row's own, or one derived from the object version and row number), which
Stripe dedupes for at least 24 hours. A failing object backs off and is given up only for a
permanent error, a failure lasting MFX_POLLER_GIVE_UP_AFTER, or the 23 h re-send horizon
(service.poller.failures). Failed rows go to a failed-records file (usage columns +
error_code + error_message) and to the `on_failed_rows(import_set, path)` hook, which hands
them to remediation.

On PostgreSQL one instance polls at a time (`pg_try_advisory_lock`); a pass that cannot get
the lock is skipped. SQLite means a single process.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Container, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from remediation.errors import UnreadableFile
from remediation.formats import detect_format, read_records
from remediation.limits import DEFAULT_LIMITS, FieldLimits
from remediation.poller import RowRef, index_chunks
from remediation.ports import Bucket, MeterEventSink, MeterSource, ObjectInfo
from remediation.repair import HEAD_BYTES, whole_file_failure
from remediation.validation import MeterIndex
from service.config import PollerMode, Settings
from service.errors import ObjectChanged, ObjectNotSettled, PartlyUnreadable
from service.jobs.store.reports import save_poller_import_set
from service.logs import log_event
from service.models import ProcessRole
from service.models._types import utcnow
from service.poller.again import TakenAgain
from service.poller.failures import judge, raise_gave_up, resolve_gave_up
from service.poller.handover import (
    FailedRowsHook,
    hand_over,
    log_failed_rows,
    queue_late_reports,
    queue_pending_remediation,
    remediation_hook,
)
from service.poller.importer import ObjectImport, import_object
from service.poller.lock import POLLER_LOCK_KEY, poller_lock
from service.poller.odd_keys import name_files_not_utf8, recordable
from service.poller.planning import PassLimits, plan_pass
from service.poller.progress import ProgressStore
from service.poller.settling import Listing, check_settled
from service.poller.snapshot import clear_snapshots, take_snapshot
from service.poller.versions import PollerStore
from service.runtime import Runtime
from service.worker.heartbeats import beat, new_instance_id

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


def build_poller_deps(runtime: Runtime, *, progress: Progress | None = None) -> PollerDeps:
    """What a pass needs, taken from the Runtime: bucket, meters and the event stream."""
    settings = runtime.settings
    index = settings.mfx_poller == PollerMode.INDEX
    return PollerDeps(
        engine=runtime.engine,
        settings=settings,
        bucket=runtime.bucket,
        meters=None if index else runtime.meter_source,
        sink=None if index else runtime.meter_event_sink,
        work_dir=Path(settings.mfx_work_dir).absolute() / "poller",
        on_failed_rows=remediation_hook(runtime.engine),
        progress=progress,
        field_limits=runtime.rules.policy.limits,
    )


def run_poll_pass(target: PollerDeps | Runtime, *, locked: bool = False) -> PassReport:
    """One pass. `target` is PollerDeps, or a Runtime (adapters are then built for it).
    `locked`: the caller holds the poller lock (`poll --retry` decides under it what to send)."""
    deps = target if isinstance(target, PollerDeps) else build_poller_deps(target)
    _beat(deps, "pass")
    with nullcontext(True) if locked else poller_lock(deps.engine) as acquired:
        if not acquired:
            log_event("poller.pass_skipped", reason="another instance holds the poller lock")
            return PassReport(ran=False)
        if not deps.index_mode:
            queue_pending_remediation(deps.engine)
        report = _run_pass(deps)
        if report.keys:
            report.reports_matched = queue_late_reports(deps.engine, deps.clock(), report.keys)
    log_event(
        "poller.pass", **{k: v for k, v in vars(report).items() if k not in ("errors", "keys")}
    )
    return report


def _run_pass(deps: PollerDeps) -> PassReport:
    store = PollerStore(deps.engine)
    report = PassReport(mode="index" if deps.index_mode else "import")
    clear_snapshots(deps.work_dir / "objects")
    started = deps.clock()
    listed = recordable(deps.engine, deps.bucket.list_objects(), report.errors)
    done = "indexed" if deps.index_mode else "imported"
    name_files_not_utf8(deps.engine, deps.bucket, _excluded(deps), done, report.errors)
    listing = Listing(started, deps.clock())
    _mark_unlisted(store, listed)
    seen, first_sync = store.seen()
    waiting = store.waiting(deps.clock())
    if deps.index_mode:
        seen -= store.uploaded_again(listed)  # Stripe's connector takes each upload whole
    if deps.only is not None:
        only = deps.only
        listed = [obj for obj in listed if (obj.key, obj.etag) in only]
    plan = plan_pass(
        listed,
        seen | waiting,
        now=deps.clock(),
        first_sync=first_sync,
        excluded_prefixes=_excluded(deps),
        limits=deps.limits,
    )
    report.listed, report.skipped, report.deferred = len(listed), len(plan.skip), plan.deferred
    report.waiting = sum(1 for obj in listed if (obj.key, obj.etag) in waiting)
    store.record_skipped(plan.skip)
    try:
        meters = (
            MeterIndex(deps.meters.meters(), limits=deps.field_limits)
            if deps.meters and not deps.index_mode
            else None
        )
    except Exception as exc:  # loop edge: Stripe's meters unreadable (an incident, a key)
        _meters_failed(deps, store, plan.take, exc, report)
        return report
    for number, obj in enumerate(plan.take, start=1):
        _process_object(deps, store, obj, meters, report, listing)
        if deps.progress:
            deps.progress(number, len(plan.take), obj.key)
    return report


def _meters_failed(
    deps: PollerDeps,
    store: PollerStore,
    take: Sequence[ObjectInfo],
    exc: Exception,
    report: PassReport,
) -> None:
    """No file can be validated without Stripe's meters: each file the pass would have taken
    fails as it would on its own, backing off and, past MFX_POLLER_GIVE_UP_AFTER, given up
    with a critical alert (a pass that only raised left usage unimported for days, no file
    failing, no alert, the heartbeat green)."""
    reason = f"Stripe's meters could not be read: {type(exc).__name__}: {exc}"
    log_event("poller.meters_failed", level=logging.ERROR, reason=reason, files=len(take))
    for obj in take:
        store.claim(obj)
        report.retry_files += 1
        report.gave_up += _failed(deps, store, obj, exc, reason)
        report.errors.append(f"{obj.key}: {reason}")


def _excluded(deps: PollerDeps) -> list[str]:
    """Prefixes whose objects are never imported: the quarantine's."""
    return [deps.bucket.prefix + _dir(deps.settings.mfx_quarantine_prefix)]


def _mark_unlisted(store: PollerStore, listed: Sequence[ObjectInfo]) -> None:
    """Versions left `seen` that the bucket no longer has are gone, not waiting for ever (the
    digests counted them in the backlog)."""
    for key in store.mark_unlisted(listed):
        log_event(
            "poller.object_gone",
            level=logging.WARNING,
            key=key,
            reason="no longer listed (deleted or overwritten) before it was imported",
        )


def _process_object(
    deps: PollerDeps,
    store: PollerStore,
    obj: ObjectInfo,
    meters: MeterIndex | None,
    r: PassReport,
    listing: Listing,
) -> None:
    store.claim(obj)
    source: Path | None = None
    try:
        settled = partial(check_settled, store, obj, listing)
        source = take_snapshot(deps.bucket, obj, deps.work_dir / "objects", settled)
        if meters is None or deps.sink is None:
            r.rows += _index_object(deps, store, obj, source)
            r.indexed += 1
        else:
            _whole_file(source, obj)
            _import_object(deps, store, obj, meters, deps.sink, r, source)
            r.imported += 1
        r.keys.add(obj.key)
    except ObjectChanged as exc:
        # the version listed is gone: its new version (if any) is another object, taken on
        # its own; what this version sent stays recorded (other versions leave those rows out);
        # put back with the same bytes, it is taken again (`PollerStore.mark_gone`)
        store.mark_gone(obj, str(exc))
        r.skipped += 1
        log_event("poller.object_changed", level=logging.WARNING, key=obj.key, reason=str(exc))
    except ObjectNotSettled as exc:
        store.defer(obj, datetime.fromtimestamp(exc.ready_at, UTC), str(exc))
        r.deferred += 1
        log_event("poller.object_not_settled", key=obj.key, reason=str(exc))
    except UnreadableFile as exc:
        if ProgressStore(deps.engine).batch_count(store.object_id(obj)):
            # rows of it went out before the unreadable part: not a whole-file failure (a
            # whole-file repair would send them again); given up with what was sent
            partly = PartlyUnreadable(exc.reason)
            r.retry_files += 1
            r.gave_up += _failed(deps, store, obj, partly, f"{obj.key}: {exc.reason}")
            r.errors.append(f"{obj.key}: {exc.reason}")
            log_event("poller.unreadable_part_way", level=logging.ERROR, key=obj.key)
            return
        impset_id = None if deps.index_mode else _impset_id(obj)
        store.mark_unreadable(obj, exc.reason, impset_id)
        if impset_id:
            # the import set of a file that cannot be read as it is: failed, with the reason;
            # remediation repairs it as it repairs a file Stripe's importer failed, or says
            # why it cannot (`import_set_failed`)
            import_set = save_poller_import_set(
                deps.engine, impset_id, obj.key, status="failed", failed_reason=exc.reason
            )
            hand_over(deps.on_failed_rows, import_set, Path(obj.key))
        r.failed_files += 1
        r.errors.append(f"{obj.key}: {exc.reason}")
        log_event("poller.unreadable", level=logging.WARNING, key=obj.key, reason=exc.reason)
    except Exception as exc:  # loop edge: one object's failure must not stop the pass
        reason = f"{type(exc).__name__}: {exc}"
        r.retry_files += 1
        r.gave_up += _failed(deps, store, obj, exc, reason)
        r.errors.append(f"{obj.key}: {reason}")
        log_event("poller.object_failed", level=logging.ERROR, key=obj.key, reason=reason)
    finally:
        if source is not None:
            source.unlink(missing_ok=True)


def _whole_file(source: Path, obj: ObjectInfo) -> None:
    """Raise UnreadableFile when Stripe's importer would fail the object as a whole (its
    first bytes say so: `remediation.repair.whole_file_failure`), before any row is sent."""
    with source.open("rb") as stream:
        head = stream.read(HEAD_BYTES)
    reason = whole_file_failure(head, obj.key)
    if reason is not None:
        raise UnreadableFile(reason)


def _failed(
    deps: PollerDeps, store: PollerStore, obj: ObjectInfo, exc: Exception, reason: str
) -> bool:
    """Back off, or give up with a critical alert; True when given up."""
    progress = ProgressStore(deps.engine).load(obj)
    give_up_after = deps.settings.mfx_poller_give_up_after
    verdict = judge(exc, progress, deps.clock(), give_up_after)
    store.mark_error(
        obj,
        reason,
        give_up=verdict.give_up,
        failing_since=verdict.failing_since,
        next_attempt_at=verdict.next_attempt_at,
    )
    if verdict.give_up:
        raise_gave_up(deps.engine, obj, verdict, reason, progress, give_up_after)
    return verdict.give_up


def _beat(deps: PollerDeps, doing: str, **detail: Any) -> None:
    """One heartbeat of this poller instance; a failing beat never fails the pass."""
    try:
        beat(deps.engine, deps.instance, ProcessRole.POLLER, {"doing": doing, **detail})
    except Exception as exc:  # loop edge: the database may be briefly unavailable
        log_event("poller.heartbeat_failed", level=logging.WARNING, reason=type(exc).__name__)


def _index_object(deps: PollerDeps, store: PollerStore, obj: ObjectInfo, source: Path) -> int:
    rows = 0
    again = TakenAgain(deps.engine, obj, deps.bucket.prefix)  # rows billed again: an alert
    with source.open("rb") as stream:
        for refs in index_chunks(read_records(stream, detect_format(obj.key))):
            again.check(refs)
            store.insert_rows(obj, refs)
            rows += len(refs)
    store.mark_indexed(obj, rows)
    again.alert()
    return rows


def _import_object(
    deps: PollerDeps,
    store: PollerStore,
    obj: ObjectInfo,
    meters: MeterIndex,
    sink: MeterEventSink,
    report: PassReport,
    source: Path,
) -> None:
    job = ObjectImport(
        store=store,
        progress=ProgressStore(deps.engine),
        sink=sink,
        meters=meters,
        work_dir=deps.work_dir,
        clock=deps.clock,
        beat=lambda: _beat(deps, "import", key=obj.key),
    )
    import_set, path = import_object(job, obj, _impset_id(obj), source)
    rows, sent = import_set.rows_processed or 0, import_set.successes_row_count or 0
    failed = import_set.errors_row_count or 0
    left_out = (import_set.detail or {}).get("sent_by_other_versions")
    report.left_out += left_out if isinstance(left_out, int) else 0
    report.rows, report.sent, report.failed_rows = (
        report.rows + rows,
        report.sent + sent,
        report.failed_rows + failed,
    )
    resolve_gave_up(deps.engine, obj)
    if failed:
        hand_over(deps.on_failed_rows, import_set, path)
    else:
        path.unlink(missing_ok=True)


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
