"""A claimed inbox row's half of its life cycle (`service.worker.inbox` tells all of it): the
claim, its lease, finishing it (done, retried with backoff, dead-lettered) and the dead
letter's alert. Apart from re-queueing and replays, which other rooms call too."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, false, or_, select, update

from service.intake.store import INBOX
from service.models._types import utcnow
from service.models.inbox import InboxStatus
from service.notify.alerts import raise_alert, resolve_alert
from service.worker.inbox import TAKEN_OVER, take_over_ended
from service.worker.tasks import TASK_STYLE

FIRST_RETRY_SECONDS = 15.0  # jittered to 7.5-15 s: the first retry comes within 30 s
MAX_BACKOFF_SECONDS = 900.0  # 15 minutes
ERROR_TEXT_LIMIT = 2000


@dataclass(frozen=True)
class ClaimedEvent:
    row_id: int
    event_id: str
    event_type: str
    style: str
    body: str
    attempts: int
    # Taken over from a worker that stopped without finishing (its lease expired), not due
    # after a recorded failure: its attempts past the limit mean it keeps killing workers.
    taken_over: bool = False


def _claimable(now: datetime, lease: timedelta) -> Any:
    due = and_(
        INBOX.c.status == InboxStatus.PENDING,
        or_(INBOX.c.next_attempt_at.is_(None), INBOX.c.next_attempt_at <= now),
    )
    stale = and_(INBOX.c.status == InboxStatus.PROCESSING, INBOX.c.locked_at < now - lease)
    return or_(due, stale)


def claim_next(engine: Engine, worker_id: str, lease: timedelta) -> ClaimedEvent | None:
    """Take the oldest due row (or one whose worker died), or None when nothing is due."""
    now = utcnow()
    statement = (
        update(INBOX)
        .where(INBOX.c.id == _oldest_claimable(now, lease), _claimable(now, lease))
        .values(**_claim_values(worker_id, now))
        .returning(*_CLAIMED_COLUMNS)
    )
    with engine.begin() as connection:
        row = connection.execute(statement).first()
    if row is None:
        return None
    return ClaimedEvent(row[0], row[1], row[2], row[3], row[4], row[5], row[6] == TAKEN_OVER)


def _oldest_claimable(now: datetime, lease: timedelta) -> Any:
    """The id of the oldest claimable row no other worker is claiming (a subquery)."""
    return (
        select(INBOX.c.id)
        .where(_claimable(now, lease))
        .order_by(INBOX.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )


def _claim_values(worker_id: str, now: datetime) -> dict[str, Any]:
    """The columns a claim sets: the row is this worker's, one attempt more."""
    return {
        "status": InboxStatus.PROCESSING,
        "locked_by": worker_id,
        "locked_at": now,
        "attempts": INBOX.c.attempts + 1,
        "next_attempt_at": None,
        # RETURNING sees the new row only: the old status is told through last_error,
        # which then says (on the dashboard too) why the previous attempt has no result;
        # a due row's claim is no take-over, whatever mark an earlier one left
        "last_error": case(
            (INBOX.c.status == InboxStatus.PROCESSING, TAKEN_OVER),
            else_=take_over_ended(),
        ),
    }


# What a claim returns, in `ClaimedEvent`'s order (`last_error` tells a take-over).
_CLAIMED_COLUMNS = (
    INBOX.c.id,
    INBOX.c.event_id,
    INBOX.c.event_type,
    INBOX.c.style,
    INBOX.c.body,
    INBOX.c.attempts,
    INBOX.c.last_error,
)


def storable(reason: str) -> str:
    """A reason or outcome as a text column holds it on any database: a NUL (an event's or a
    file's, quoted in a message; PostgreSQL's text holds none, and the row would never record
    its failure) spelt `\\x00`."""
    return reason.replace("\x00", "\\x00")


def mark_done(
    connection: Connection, claimed: ClaimedEvent, worker_id: str, outcome: str, status: str
) -> bool:
    """Finish a claimed row inside the caller's transaction; False if the lease was lost.
    A row `requeue` asked for while it ran is pending again (due since it was asked).

    A success also resolves the row's dead-letter alert (a replayed or retried item that now
    works), in the same transaction."""
    again = INBOX.c.next_attempt_at.is_not(None)  # asked for again while it ran
    result = connection.execute(
        update(INBOX)
        .where(_owned(claimed, worker_id))
        .values(
            status=case((again, InboxStatus.PENDING.value), else_=status),
            attempts=case((again, 0), else_=INBOX.c.attempts),
            last_error=case((again, take_over_ended()), else_=INBOX.c.last_error),
            outcome=storable(outcome)[:ERROR_TEXT_LIMIT],
            processed_at=utcnow(),
            locked_by=None,
            locked_at=None,
        )
    )
    if result.rowcount != 1:
        return False
    resolve_alert(connection, dead_letter_key(claimed.event_id))
    return True


def renew_lease(engine: Engine, claimed: ClaimedEvent, worker_id: str) -> bool:
    """Move the lease of a row we still hold forward (the heartbeat calls this while the
    item is worked on); False when the row is no longer ours."""
    with engine.begin() as connection:
        result = connection.execute(
            update(INBOX).where(_owned(claimed, worker_id)).values(locked_at=utcnow())
        )
    return result.rowcount == 1


def holds_lease(engine: Engine, claimed: ClaimedEvent, worker_id: str) -> bool:
    """Whether `worker_id` holds the row still, on this claim's attempt (its lease may have
    expired unclaimed: still its own; claimed by another worker since: not)."""
    with engine.connect() as connection:
        row = connection.execute(select(INBOX.c.id).where(_owned(claimed, worker_id))).first()
    return row is not None


def holds_lease_in(connection: Connection, claimed: ClaimedEvent, worker_id: str) -> bool:
    """`holds_lease` in the caller's transaction, the row then locked shared until it ends
    (PostgreSQL): a claim by another worker waits for what the transaction commits."""
    held = select(INBOX.c.id).where(_owned(claimed, worker_id)).with_for_update(read=True)
    return connection.execute(held).first() is not None


def release_claim(engine: Engine, claimed: ClaimedEvent, worker_id: str) -> bool:
    """Give a row we hold back, due now, without counting the attempt (the worker was asked
    to stop mid-item: the next worker takes it at once instead of after the lease)."""
    with engine.begin() as connection:
        result = connection.execute(
            update(INBOX)
            .where(_owned(claimed, worker_id))
            .values(
                status=InboxStatus.PENDING,
                attempts=INBOX.c.attempts - 1,
                next_attempt_at=utcnow(),
                locked_by=None,
                locked_at=None,
                last_error=take_over_ended(),  # its next claim is no take-over
            )
        )
    return result.rowcount == 1


def mark_failed(
    connection: Connection,
    claimed: ClaimedEvent,
    worker_id: str,
    error: str,
    dead: bool,
    *,
    permanent: bool = False,
) -> tuple[bool, datetime | None, bool]:
    """Schedule a retry or dead-letter the row, keeping the error either way. Returns whether
    the row was still ours (False: another worker took it over), when it is due again, and
    whether it was dead-lettered. A `requeue` asked for while it ran is answered by the retry;
    on its last attempt, by a fresh set of attempts, due now (the run asked for is new work: a
    new file's rows), unless the failure is `permanent` (the event itself is unusable)."""
    now = utcnow()
    retry_at = now + timedelta(seconds=backoff_seconds(claimed.attempts))
    asked = INBOX.c.next_attempt_at.is_not(None) if dead and not permanent else false()
    row = connection.execute(
        update(INBOX)
        .where(_owned(claimed, worker_id))
        .values(
            status=case((asked, InboxStatus.PENDING.value), else_=_failed(dead)),
            attempts=case((asked, 0), else_=INBOX.c.attempts),
            last_error=error[:ERROR_TEXT_LIMIT],
            next_attempt_at=case((asked, now), else_=None if dead else retry_at),
            locked_by=None,
            locked_at=None,
        )
        .returning(INBOX.c.status)
    ).first()
    if row is None:
        return False, None, dead
    if not dead:
        return True, retry_at, False
    again = row.status != InboxStatus.DEAD
    return True, now if again else None, not again


def _failed(dead: bool) -> str:
    return InboxStatus.DEAD.value if dead else InboxStatus.PENDING.value


def _owned(claimed: ClaimedEvent, worker_id: str) -> Any:
    """The row as this claim holds it: ours, on this claim's attempt (a claim of the row by
    this worker again, after its lease expired, is another attempt, not this one's to end)."""
    return and_(
        INBOX.c.id == claimed.row_id,
        INBOX.c.status == InboxStatus.PROCESSING,
        INBOX.c.locked_by == worker_id,
        INBOX.c.attempts == claimed.attempts,
    )


def backoff_seconds(attempts: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: 7.5-15 s after the first failure, capped at 15 min."""
    ceiling = min(MAX_BACKOFF_SECONDS, FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0))
    return float(ceiling * (rng or random).uniform(0.5, 1.0))


def dead_letter_alert(
    connection: Connection, claimed: ClaimedEvent, error: str, *, permanent: bool = False
) -> None:
    """One alert per dead event (deterministic key); a replayed event that dies again counts
    again on the same alert (reopening it if it was resolved). `permanent`: dead-lettered at
    once, because retrying cannot help (the event's data is unusable, the input is gone)."""
    why = "not retried" if permanent else f"gave up after {claimed.attempts} attempts"
    raise_alert(
        connection,
        key=dead_letter_key(claimed.event_id),
        severity="critical",
        kind="inbox.dead_letter",
        # a task is meterfix's own work (a remediation), no event of Stripe's
        subject=f"{'Task' if claimed.style == TASK_STYLE else 'Stripe event'} "
        f"{claimed.event_id} ({claimed.event_type}) dead-lettered",
        message=f"{why}: {error[:ERROR_TEXT_LIMIT]}",
        detail={"event_id": claimed.event_id, "event_type": claimed.event_type},
        links={"event": claimed.event_id},
    )


def dead_letter_key(event_id: str) -> str:
    """The alert key of a dead-lettered event; a later success of the event resolves it."""
    return f"inbox.dead:{event_id}"
