"""`meterfix poll --retry KEY [--yes]`: take a given-up (or backing-off) object again now.

Before anything is sent it says what a retry re-sends: the batches sent before and never
acknowledged (rows, first send times). Past the 23 h horizon those may no longer be deduped
by Stripe, so re-sending them needs the operator's explicit `--yes`, recorded as an admin
action; their send records are then dropped, so the 23 h horizon counts from the new send.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from remediation.ports import ObjectInfo
from service.models import AdminAction, AdminActionName
from service.models._types import as_utc, table_of, utcnow
from service.poller.progress import ObjectProgress, ProgressStore, SentBatch
from service.poller.store import PollerStore, newest_object

ACTIONS = table_of(AdminAction)


@dataclass(frozen=True)
class RetryPlan:
    obj: ObjectInfo
    status: str
    error: str | None
    progress: ObjectProgress
    stale: tuple[SentBatch, ...]  # unacknowledged and first sent more than 23 h ago

    @property
    def needs_yes(self) -> bool:
        return bool(self.stale)


def find_retry(engine: Engine, key: str, prefix: str, now: datetime) -> RetryPlan | None:
    """The newest version of `key` (as stored, or under the bucket prefix) the poller knows."""
    row = newest_object(engine, {key, prefix + key})
    if row is None:
        return None
    obj = ObjectInfo(
        key=row["key"],
        etag=row["etag"],
        size=row["size"],
        last_modified=as_utc(row["last_modified"]) or utcnow(),
    )
    progress = ProgressStore(engine).load(obj)
    return RetryPlan(obj, row["status"], row["error"], progress, progress.past_horizon(now))


def describe(plan: RetryPlan) -> list[str]:
    """What a retry does, in lines for the terminal."""
    progress, unacked = plan.progress, plan.progress.unacked
    lines = [f"{plan.obj.key} ({plan.status}): {plan.error or 'no error recorded'}"]
    start = f"row {progress.resume_row}" if progress.resume_row else "its first row"
    lines.append(
        f"{progress.acked_batches} batches acknowledged; a retry resumes at {start} "
        "(acknowledged rows are not sent again)."
    )
    if unacked:
        lines.append(f"It re-sends {_batches(unacked)}, sent before and never acknowledged.")
    if plan.stale:
        lines.append(
            f"{_batches(plan.stale)} were first sent more than 23 h ago: Stripe may no longer "
            "dedupe their identifiers, so rows it already accepted would be billed twice."
        )
    return lines


def reopen(engine: Engine, plan: RetryPlan, *, confirmed: bool) -> None:
    """Make the object due now; with `confirmed` (--yes) drop the stale send records."""
    forgotten = 0
    if plan.stale and confirmed:
        forgotten = ProgressStore(engine).forget_unacked(plan.progress.object_id)
    PollerStore(engine).reopen(plan.obj)
    # The admin action of `poll --retry`: admin actions have no store of their own outside
    # the dashboard's (service.web.store), which the poller may not import.
    with engine.begin() as conn:
        conn.execute(
            ACTIONS.insert().values(
                action=AdminActionName.RETRY,
                target_type="object",
                target_id=plan.obj.key[:512],
                via="cli",
                detail={
                    "etag": plan.obj.etag,
                    "status": plan.status,
                    "past_horizon_batches": len(plan.stale),
                    "confirmed": confirmed,
                    "send_records_dropped": forgotten,
                },
                source_address="",
                created_at=utcnow(),
            )
        )


def _batches(batches: tuple[SentBatch, ...]) -> str:
    first_row = min(b.first_row for b in batches)
    last_row = max(b.first_row + b.rows - 1 for b in batches)
    first = min(b.first_sent_at for b in batches)
    last = max(b.first_sent_at for b in batches)
    when = f"{first:%Y-%m-%d %H:%M:%S}" + (f" to {last:%Y-%m-%d %H:%M:%S}" if last != first else "")
    return f"{len(batches)} batches (rows {first_row} to {last_row}, first sent {when} UTC)"
