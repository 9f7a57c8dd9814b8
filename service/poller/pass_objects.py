"""One object a poller pass takes: its snapshot imported as meter events, or indexed; a file
that cannot be read failed whole, any other failure backed off or given up (each object too
when Stripe's meters cannot be read). Apart from the pass (service.poller.passes), which lists
the bucket and plans what it takes."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from remediation.errors import UnreadableFile
from remediation.formats import detect_format, read_records
from remediation.poller import index_chunks
from remediation.ports import MeterEventSink, ObjectInfo
from remediation.repair import HEAD_BYTES, whole_file_failure
from remediation.validation import MeterIndex
from service.db.locks import LockLost
from service.errors import ObjectChanged, ObjectNotSettled, PartlyUnreadable
from service.jobs.store.indexed_rows import index_seconds
from service.jobs.store.reports import save_poller_import_set
from service.logs import log_event
from service.models import ProcessRole
from service.poller.again import TakenAgain
from service.poller.failures import judge, raise_gave_up, resolve_gave_up
from service.poller.handover import hand_over
from service.poller.import_batches import ImportStopped, ObjectImport
from service.poller.importer import import_object
from service.poller.pass_deps import PassReport, PollerDeps
from service.poller.progress import ProgressStore
from service.poller.settling import Listing, check_settled
from service.poller.snapshot import take_snapshot
from service.poller.versions import PollerStore
from service.worker import heartbeats


def meters_failed(
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


def process_object(
    deps: PollerDeps,
    store: PollerStore,
    obj: ObjectInfo,
    meters: MeterIndex | None,
    r: PassReport,
    listing: Listing,
) -> None:
    try:
        _process_object(deps, store, obj, meters, r, listing)
    except LockLost as exc:
        # neither failed nor imported, and nothing of it recorded since: another process
        # polls now and resumes after the batches Stripe acknowledged (not a failure to act on)
        r.stopped = r.lock_lost = True
        log_event("poller.lock_lost", level=logging.WARNING, key=obj.key, reason=exc.reason)


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
        copying = partial(beat, deps, "import", key=obj.key)
        source = take_snapshot(deps.bucket, obj, deps.work_dir / "objects", settled, copying)
        _import_or_index(deps, store, obj, meters, r, source)
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
        _unreadable(deps, store, obj, exc, r)
    except LockLost:
        raise  # `process_object`
    except ImportStopped as exc:
        # neither failed nor imported: left `seen`, the next pass resumes after the batches
        # Stripe acknowledged (recorded before ImportStopped left the sink)
        r.stopped = True
        log_event("poller.import_stopped", key=obj.key, reason=exc.reason)
    except Exception as exc:  # loop edge: one object's failure must not stop the pass
        _object_failed(deps, store, obj, exc, r)
    finally:
        if source is not None:
            source.unlink(missing_ok=True)


def _import_or_index(
    deps: PollerDeps,
    store: PollerStore,
    obj: ObjectInfo,
    meters: MeterIndex | None,
    r: PassReport,
    source: Path,
) -> None:
    """Index the snapshot when there are no meters or sink to import with, else import it."""
    if meters is None or deps.sink is None:
        r.rows += _index_object(deps, store, obj, source)
        r.indexed += 1
    else:
        _whole_file(source, obj)
        _import_object(deps, store, obj, meters, deps.sink, r, source)
        r.imported += 1


def _unreadable(
    deps: PollerDeps, store: PollerStore, obj: ObjectInfo, exc: UnreadableFile, r: PassReport
) -> None:
    """A file that cannot be read: failed whole, or given up with what was sent before."""
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


def _object_failed(
    deps: PollerDeps, store: PollerStore, obj: ObjectInfo, exc: Exception, r: PassReport
) -> None:
    """Any other failure of one object: backed off, or given up."""
    reason = f"{type(exc).__name__}: {exc}"
    r.retry_files += 1
    r.gave_up += _failed(deps, store, obj, exc, reason)
    r.errors.append(f"{obj.key}: {reason}")
    log_event("poller.object_failed", level=logging.ERROR, key=obj.key, reason=reason)


def _whole_file(source: Path, obj: ObjectInfo) -> None:
    """Raise UnreadableFile when Stripe's importer would fail the object as a whole (its
    first bytes say so: `remediation.repair.whole_file_failure`), before any row is sent."""
    reason = _whole_file_reason(source, obj)
    if reason is not None:
        raise UnreadableFile(reason)


def _whole_file_reason(source: Path, obj: ObjectInfo) -> str | None:
    with source.open("rb") as stream:
        head = stream.read(HEAD_BYTES)
    return whole_file_failure(head, obj.key)


def _failed(
    deps: PollerDeps, store: PollerStore, obj: ObjectInfo, exc: Exception, reason: str
) -> bool:
    """Back off, or give up with a critical alert; True when given up."""
    progress = ProgressStore(deps.engine).load(obj)
    give_up_after, now = deps.settings.mfx_poller_give_up_after, deps.clock()
    verdict = judge(exc, progress, now, give_up_after)
    store.mark_error(
        obj,
        reason,
        give_up=verdict.give_up,
        failing_since=verdict.failing_since,
        next_attempt_at=verdict.next_attempt_at,
        attempts=verdict.attempts,
    )
    if verdict.give_up:
        raise_gave_up(deps.engine, obj, verdict, reason, progress, give_up_after, now)
    return verdict.give_up


def beat(deps: PollerDeps, doing: str, **detail: Any) -> None:
    """One heartbeat of this poller instance; a failing beat never fails the pass."""
    try:
        heartbeats.beat(deps.engine, deps.instance, ProcessRole.POLLER, {"doing": doing, **detail})
    except Exception as exc:  # loop edge: the database may be briefly unavailable
        log_event("poller.heartbeat_failed", level=logging.WARNING, reason=type(exc).__name__)


def _index_object(deps: PollerDeps, store: PollerStore, obj: ObjectInfo, source: Path) -> int:
    if _whole_file_reason(source, obj) is not None:
        # Stripe's connector refuses it whole (meterfix's quarantine export uploaded as a
        # usage file, a header without event_name): it takes no row, so none is recorded,
        # none marks a quarantined row taken again, none counts as a first version
        store.mark_indexed(obj, 0)
        return 0
    rows = 0
    again = TakenAgain(deps.engine, obj, deps.bucket.prefix)  # rows billed again: an alert
    with source.open("rb") as stream:
        records = read_records(stream, detect_format(obj.key))
        for refs in index_chunks(records, seconds=index_seconds):
            if deps.stopping():  # left `seen`: the next start indexes it again (rows upserted)
                raise ImportStopped(f"{obj.key}: the poller was asked to stop mid-index")
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
        progress=ProgressStore(deps.engine, fence=deps.lock.fence),
        sink=sink,
        meters=meters,
        work_dir=deps.work_dir,
        clock=deps.clock,
        beat=lambda: beat(deps, "import", key=obj.key),
        stopping=deps.stopping,
        check_lock=deps.lock.check,
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
