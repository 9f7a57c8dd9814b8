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

One pass polls at a time per database (service.poller.lock); a pass that cannot get the lock
is skipped. On PostgreSQL the lock goes with its connection: a pass that finds it lost (before
each batch it sends, first in each transaction recording what was sent) stops sending, records
nothing more, and logs `poller.lock_lost`; the next pass, whichever process holds the lock
then, resumes after the acknowledged batches.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path

from remediation.poller import RowRef
from remediation.ports import ObjectInfo
from remediation.validation import MeterIndex
from service.config import PollerMode
from service.db.locks import HeldLock
from service.logs import log_event
from service.poller.files import clear_unrecorded_files
from service.poller.handover import (
    FailedRowsHook,
    log_failed_rows,
    queue_late_reports,
    queue_pending_remediation,
    remediation_hook,
)
from service.poller.lock import POLLER_LOCK_KEY, held_poller_lock, poller_lock
from service.poller.odd_keys import name_files_not_utf8, recordable
from service.poller.pass_deps import PassReport, PollerDeps, Progress
from service.poller.pass_objects import beat, meters_failed, process_object
from service.poller.planning import PassPlan, plan_pass
from service.poller.settling import Listing
from service.poller.snapshot import clear_snapshots
from service.poller.versions import PollerStore
from service.runtime import Runtime


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
        value_precision=runtime.rules.value_precision,
    )


def run_poll_pass(target: PollerDeps | Runtime, *, locked: bool | HeldLock = False) -> PassReport:
    """One pass. `target` is PollerDeps, or a Runtime (adapters are then built for it).
    `locked`: the caller holds the poller lock (`poll --retry` decides under it what to send):
    its `HeldLock`, or True for the one this thread took (`poller_lock`)."""
    deps = target if isinstance(target, PollerDeps) else build_poller_deps(target)
    beat(deps, "pass")
    with _lock(deps, locked) as lock:
        if not lock:
            log_event("poller.pass_skipped", reason="another instance holds the poller lock")
            return PassReport(ran=False)
        deps = replace(deps, lock=lock)
        if not deps.index_mode:
            queue_pending_remediation(deps.engine)
        report = _run_pass(deps)
        if report.keys:
            report.reports_matched = queue_late_reports(deps.engine, deps.clock(), report.keys)
    log_event(
        "poller.pass", **{k: v for k, v in vars(report).items() if k not in ("errors", "keys")}
    )
    return report


def _lock(deps: PollerDeps, locked: bool | HeldLock) -> AbstractContextManager[HeldLock]:
    """The poller lock: the caller's (`locked`), or taken for the pass."""
    if isinstance(locked, HeldLock):
        return nullcontext(locked)
    return nullcontext(held_poller_lock()) if locked else poller_lock(deps.engine)


def _run_pass(deps: PollerDeps) -> PassReport:
    store = PollerStore(deps.engine, fence=deps.lock.fence)
    report = PassReport(mode="index" if deps.index_mode else "import")
    clear_snapshots(deps.work_dir / "objects")
    clear_unrecorded_files(deps.engine, deps.work_dir)  # under the lock, before any import
    listed, listing = _list_bucket(deps, store, report)
    plan = _plan(deps, store, listed, report)
    try:
        meters = _meter_index(deps)
    except Exception as exc:  # loop edge: Stripe's meters unreadable (an incident, a key)
        meters_failed(deps, store, plan.take, exc, report)
        return report
    for number, obj in enumerate(plan.take, start=1):
        if deps.stopping():
            report.stopped = True
            break
        process_object(deps, store, obj, meters, report, listing)
        if report.lock_lost:  # another process polls now: it takes the objects left
            break
        if deps.progress:
            deps.progress(number, len(plan.take), obj.key)
    return report


def _list_bucket(
    deps: PollerDeps, store: PollerStore, report: PassReport
) -> tuple[list[ObjectInfo], Listing]:
    """The bucket's object versions a record can hold, and when they were listed; files whose
    names are not UTF-8 are named in the report, versions no longer listed marked gone."""
    started = deps.clock()
    listed = recordable(deps.engine, deps.bucket.list_objects(), report.errors)
    done = "indexed" if deps.index_mode else "imported"
    name_files_not_utf8(deps.engine, deps.bucket, _excluded(deps), done, report.errors)
    listing = Listing(started, deps.clock())
    _mark_unlisted(store, listed)
    return listed, listing


def _plan(
    deps: PollerDeps, store: PollerStore, listed: list[ObjectInfo], report: PassReport
) -> PassPlan:
    """What this pass takes of the listed versions (`deps.only`: of those only), counted on
    the report; the versions it skips are recorded."""
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
    return plan


def _meter_index(deps: PollerDeps) -> MeterIndex | None:
    """Stripe's meters, read now; None in index mode or with no meter source."""
    return (
        MeterIndex(
            deps.meters.meters(), value_precision=deps.value_precision, limits=deps.field_limits
        )
        if deps.meters and not deps.index_mode
        else None
    )


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
