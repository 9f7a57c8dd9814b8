"""Which bucket objects one poller pass takes (pure: no bucket, no database).

Planning mirrors Stripe's S3 connector (as its S3 guide describes it) with one deliberate
difference: an object is new when its (key, ETag) pair was not seen before, never by a
LastModified cursor — LastModified has one-second resolution, so a cursor skips objects
written in the same second. The pass itself adds two exceptions: a version gone when read
is taken if listed again (`service.poller.pass_objects`), and in index mode an indexed
version listed with a later LastModified (the same bytes uploaded again, which Stripe's
connector takes whole) is read again (`service.poller.passes`).
The first sync looks back 90 days; a pass takes at most 50 files or 10 GB; the quarantine
prefix and `.meta.json` sidecars are never read; only `.csv`, `.json` and `.jsonl` are usage
files. Corrected files are imported like any other.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from remediation.ports import ObjectInfo

USAGE_SUFFIXES = (".csv", ".json", ".jsonl")
SIDECAR_SUFFIX = ".meta.json"


@dataclass(frozen=True, slots=True)
class PassLimits:
    max_files: int = 50
    max_bytes: int = 10 * 1024**3
    lookback: timedelta = timedelta(days=90)


@dataclass(slots=True)
class PassPlan:
    """What one pass does: `take` in order; `skip` records as seen without reading; `deferred`
    is left for a later pass (over the file or byte limit)."""

    take: list[ObjectInfo] = field(default_factory=list)
    skip: list[tuple[ObjectInfo, str]] = field(default_factory=list)
    deferred: int = 0


def is_usage_key(key: str, excluded_prefixes: Sequence[str] = ()) -> bool:
    lowered = key.lower()
    if lowered.endswith(SIDECAR_SUFFIX) or not lowered.endswith(USAGE_SUFFIXES):
        return False
    return not any(prefix and key.startswith(prefix) for prefix in excluded_prefixes)


def plan_pass(
    objects: Iterable[ObjectInfo],
    seen: Container[tuple[str, str]],
    *,
    now: datetime,
    first_sync: bool,
    excluded_prefixes: Sequence[str] = (),
    limits: PassLimits = PassLimits(),
) -> PassPlan:
    """Oldest first (ties broken by key), unseen (key, etag) pairs only."""
    plan = PassPlan()
    candidates = [
        obj
        for obj in objects
        if is_usage_key(obj.key, excluded_prefixes) and (obj.key, obj.etag) not in seen
    ]
    candidates.sort(key=lambda obj: (obj.last_modified, obj.key))
    taken_bytes = 0
    for obj in candidates:
        reason = _skip_reason(obj, now, first_sync, limits)
        if reason:
            plan.skip.append((obj, reason))
            continue
        over_bytes = plan.take and taken_bytes + obj.size > limits.max_bytes
        if len(plan.take) >= limits.max_files or over_bytes:
            plan.deferred += 1
            continue
        plan.take.append(obj)
        taken_bytes += obj.size
    return plan


def _skip_reason(obj: ObjectInfo, now: datetime, first_sync: bool, limits: PassLimits) -> str:
    if obj.size == 0:
        return "empty object"
    if first_sync and obj.last_modified < now - limits.lookback:
        return f"modified more than {limits.lookback.days} days before the first sync"
    return ""
