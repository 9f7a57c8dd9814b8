"""`meterfix poll --retry KEY [--yes]`: take a given-up (or backing-off) object again now.

Before anything is sent it says what a retry re-sends: the batches sent before and never
acknowledged (rows, first send times). Past the 23 h horizon those may no longer be deduped
by Stripe, so re-sending them needs the operator's explicit `--yes`, recorded as an admin
action; the records of those batches (only those) are then dropped, so their 23 h horizon
counts from the new send. All of it runs under the poller lock (service.commands.poll).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from remediation.ports import ObjectInfo
from service.models import AdminAction, AdminActionName, ObjectStatus
from service.models._types import as_utc, table_of, utcnow
from service.poller.object_progress import (
    RESEND_HORIZON,
    ObjectProgress,
    SentBatch,
    describe_batches,
)
from service.poller.progress import ProgressStore
from service.poller.store import newest_object
from service.poller.versions import PollerStore

ACTIONS = table_of(AdminAction)
RETRIED = (ObjectStatus.SEEN, ObjectStatus.FAILED)  # the states a retry takes an object from


@dataclass(frozen=True)
class RetryPlan:
    obj: ObjectInfo
    status: str
    error: str | None
    progress: ObjectProgress
    stale: tuple[SentBatch, ...]  # unacknowledged and first sent more than 23 h ago
    # (object id, ETag, batch) of the same: batches of earlier versions of the key (their
    # rows, held again by this version, count as sent by them while they are recorded)
    stale_before: tuple[tuple[int, str, SentBatch], ...] = ()

    @property
    def needs_yes(self) -> bool:
        return bool(self.stale or self.stale_before)


def find_retry(engine: Engine, key: str, prefix: str, now: datetime) -> RetryPlan | None:
    """The newest version of `key` the poller knows: the key as stored, else under the bucket
    prefix (never the newer of the two: `in/a.csv` is not `in/in/a.csv`)."""
    row = newest_object(engine, {key}) or newest_object(engine, {prefix + key})
    if row is None:
        return None
    obj = ObjectInfo(
        key=row["key"],
        etag=row["etag"],
        size=row["size"],
        last_modified=as_utc(row["last_modified"]) or utcnow(),
    )
    store = ProgressStore(engine)
    progress = store.load(obj)
    before = store.stale_in_other_versions(obj, now - RESEND_HORIZON)
    return RetryPlan(
        obj, row["status"], row["error"], progress, progress.past_horizon(now), tuple(before)
    )


def describe(plan: RetryPlan) -> list[str]:
    """What a retry does, in lines for the terminal."""
    progress, unacked = plan.progress, plan.progress.unacked
    lines = [f"{plan.obj.key} ({plan.status}): {plan.error or 'no error recorded'}"]
    start = f"row {progress.resume_row}" if progress.resume_row else "its first row"
    # the unbroken run from the first batch, and those acknowledged past a batch that was not
    acknowledged = progress.acked_batches + len(progress.acked_beyond)
    lines.append(
        f"{acknowledged} batch{'es' if acknowledged != 1 else ''} acknowledged; a retry "
        f"resumes at {start} (acknowledged rows are not sent again)."
    )
    if unacked:
        lines.append(
            f"It re-sends {describe_batches(unacked)}, sent before and never acknowledged."
        )
    if plan.stale:
        lines.append(
            f"{describe_batches(plan.stale)} {'was' if len(plan.stale) == 1 else 'were'} first "
            "sent more than 23 h ago: Stripe may no longer "
            "dedupe their identifiers, so rows it already accepted would be billed twice."
        )
    return lines + describe_earlier(plan)


def describe_earlier(plan: RetryPlan) -> list[str]:
    """What a retry decides of earlier versions' batches past the horizon, in lines."""
    lines = []
    for etag in dict.fromkeys(etag for _, etag, _ in plan.stale_before):
        batches = tuple(b for _, e, b in plan.stale_before if e == etag)
        lines.append(
            f"An earlier version of {plan.obj.key} (ETag {etag}) sent {describe_batches(batches)} "
            "and Stripe never acknowledged them, more than 23 h ago: with --yes they count "
            "as never sent, and their rows a file holds again are sent again (rows Stripe "
            "already accepted would be billed twice); without, nothing is sent."
        )
    return lines


def reopen(engine: Engine, plan: RetryPlan, *, confirmed: bool) -> None:
    """Make the object due now; with `confirmed` (--yes) drop the stale send records."""
    forgotten = 0
    if plan.stale and confirmed:
        # only the batches the operator decided on: a younger one keeps its first send
        # time (dropped, the horizon would count from the retry, past Stripe's dedupe window)
        stale = [batch.number for batch in plan.stale]
        forgotten = ProgressStore(engine).forget_unsent(plan.progress.object_id, stale)
    if plan.stale_before and confirmed:
        forgotten += forget_before(engine, plan)
    if plan.status in RETRIED:
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
                    "earlier_versions_past_horizon_batches": len(plan.stale_before),
                    "confirmed": confirmed,
                    "send_records_dropped": forgotten,
                },
                source_address="",
                created_at=utcnow(),
            )
        )


def forget_before(engine: Engine, plan: RetryPlan) -> int:
    """Drop the records of the earlier versions' stale batches (`--yes`); how many went."""
    store, forgotten = ProgressStore(engine), 0
    for object_id in dict.fromkeys(object_id for object_id, _, _ in plan.stale_before):
        numbers = [b.number for o, _, b in plan.stale_before if o == object_id]
        forgotten += store.forget_unsent(object_id, numbers)
    return forgotten
