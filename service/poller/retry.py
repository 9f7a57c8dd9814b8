"""`meterfix poll --retry KEY [--yes]`: take a given-up (or backing-off) object again now.

Before anything is sent it says what a retry re-sends: the batches sent before and never
acknowledged (rows, first send times). Past the 23 h horizon those may no longer be deduped
by Stripe, so re-sending them needs the operator's explicit `--yes`, recorded as an admin
action; the records of those batches (only those) are then dropped, so their 23 h horizon
counts from the new send. All of it runs under the poller lock (service.commands.poll).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from remediation.ports import ObjectInfo
from service.models import AdminAction, AdminActionName
from service.models._types import as_utc, table_of, utcnow
from service.poller.object_progress import ObjectProgress, SentBatch
from service.poller.progress import ProgressStore
from service.poller.store import newest_object
from service.poller.versions import PollerStore

ACTIONS = table_of(AdminAction)
MAX_SPANS_SHOWN = 5  # row spans printed; the count of rows covers them all


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
    progress = ProgressStore(engine).load(obj)
    return RetryPlan(obj, row["status"], row["error"], progress, progress.past_horizon(now))


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
        lines.append(f"It re-sends {_batches(unacked)}, sent before and never acknowledged.")
    if plan.stale:
        lines.append(
            f"{_batches(plan.stale)} {'was' if len(plan.stale) == 1 else 'were'} first sent "
            "more than 23 h ago: Stripe may no longer "
            "dedupe their identifiers, so rows it already accepted would be billed twice."
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
    """`2 batches (rows 501 to 600 and 1501 to 1600: 200 rows, first sent ... UTC)`: the rows
    each batch spans (the acknowledged ones between them are not sent again)."""
    spans = _row_spans(batches)
    shown = " and ".join(f"{first} to {last}" for first, last in spans[:MAX_SPANS_SHOWN])
    more = f" and {len(spans) - MAX_SPANS_SHOWN} more spans" if len(spans) > MAX_SPANS_SHOWN else ""
    rows = sum(last - first + 1 for first, last in spans)
    first = min(b.first_sent_at for b in batches).astimezone(UTC)  # PostgreSQL: session's zone
    last = max(b.first_sent_at for b in batches).astimezone(UTC)
    when = f"{first:%Y-%m-%d %H:%M:%S}" + (f" to {last:%Y-%m-%d %H:%M:%S}" if last != first else "")
    count = f"{len(batches)} batch" + ("es" if len(batches) != 1 else "")
    return f"{count} (rows {shown}{more}: {rows} rows, first sent {when} UTC)"


def _row_spans(batches: tuple[SentBatch, ...]) -> list[tuple[int, int]]:
    """(first row, last row) of the batches, adjacent ones merged."""
    spans: list[tuple[int, int]] = []
    for batch in sorted(batches, key=lambda b: b.first_row):
        first, last = batch.first_row, batch.first_row + batch.rows - 1
        if spans and first <= spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], max(spans[-1][1], last))
        else:
            spans.append((first, last))
    return spans
