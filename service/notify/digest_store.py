"""The notify room's store of digest runs: every query over them (apart from the alerts'
store, `store.py`: one store module per aggregate).

Digest runs: one row per (channel, window); the unique (channel, window_start) makes a claim
an insert that only one process wins (see `digests.py`), or, where a finished row of another
`DIGEST_EVERY` starts at the same time, an update of that row that only one process wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select, update

from service.db.statements import delete_batch, insert_or_ignore
from service.models._types import as_utc, table_of
from service.models.alerts import DigestRun, DigestStatus

DIGEST_RUNS = table_of(DigestRun)


def recorded_windows(engine: Engine, channel: str, limit: int) -> list[tuple[datetime, datetime]]:
    """(start, end) of the latest windows recorded for `channel`, the latest first."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(DIGEST_RUNS.c.window_start, DIGEST_RUNS.c.window_end)
            .where(DIGEST_RUNS.c.channel == channel)
            .order_by(DIGEST_RUNS.c.window_end.desc())
            .limit(limit)
        ).all()
    found = []
    for row in rows:
        start, end = as_utc(row[0]), as_utc(row[1])
        assert start is not None and end is not None
        found.append((start, end))
    return found


def claim_window(engine: Engine, values: Mapping[str, Any]) -> bool:
    """Record a new (channel, window) row; False when another process recorded it first."""
    with engine.begin() as connection:
        inserted = connection.execute(
            insert_or_ignore(connection.dialect.name, DIGEST_RUNS, ["channel", "window_start"])
            .values(**values)
            .returning(DIGEST_RUNS.c.id)  # rowcount is -1 here on PostgreSQL
        ).first()
    return inserted is not None


def take_over_window(engine: Engine, values: Mapping[str, Any]) -> bool:
    """Claim a window over the finished row of another window that starts at the same time
    (`DIGEST_EVERY` changed: the hourly row of midnight holds the daily window's start, and
    (channel, window_start) has one row); False when there is none, or it is still being
    sent or retried (its window is the next pass's). Only one process moves the row: the
    first update makes its end this window's."""
    row = DIGEST_RUNS.c
    done = [DigestStatus.SENT, DigestStatus.EMPTY, DigestStatus.UNSURE]
    finished = row.status.in_(done) | (
        (row.status == DigestStatus.FAILED) & row.next_attempt_at.is_(None)
    )
    other = (
        (row.channel == values["channel"])
        & (row.window_start == values["window_start"])
        & (row.window_end != values["window_end"])
    )
    cleared = {"last_error": None, "sent_at": None}
    with engine.begin() as connection:
        moved = connection.execute(
            update(DIGEST_RUNS).where(other & finished).values(**values, **cleared)
        )
    return moved.rowcount == 1


def take_due_windows(
    engine: Engine, channel: str, now: datetime, *, instance: str, lease_until: datetime
) -> list[tuple[datetime, datetime, int]]:
    """Failed rows whose next try is due, and claims whose lease ran out, re-claimed for
    `instance` (at most 10 per pass): (window start, end, attempts so far) of each."""
    due = (
        (DIGEST_RUNS.c.channel == channel)
        & DIGEST_RUNS.c.status.in_([DigestStatus.FAILED, DigestStatus.SENDING])
        & (DIGEST_RUNS.c.next_attempt_at <= now)
    )
    taken: list[tuple[datetime, datetime, int]] = []
    with engine.begin() as connection:
        rows = connection.execute(
            select(DIGEST_RUNS.c.id).where(due).order_by(DIGEST_RUNS.c.window_start).limit(10)
        ).all()
        for (row_id,) in rows:
            claimed = connection.execute(
                update(DIGEST_RUNS)
                .where(due & (DIGEST_RUNS.c.id == row_id))
                .values(
                    status=DigestStatus.SENDING.value,
                    attempts=DIGEST_RUNS.c.attempts + 1,
                    claimed_by=instance,
                    next_attempt_at=lease_until,
                )
                .returning(
                    DIGEST_RUNS.c.window_start, DIGEST_RUNS.c.window_end, DIGEST_RUNS.c.attempts
                )
            ).first()
            if claimed is not None:
                start, end = as_utc(claimed[0]), as_utc(claimed[1])
                assert start is not None and end is not None
                taken.append((start, end, int(claimed[2])))
    return taken


def update_own_window(
    engine: Engine,
    channel: str,
    window: tuple[datetime, datetime],
    instance: str,
    values: Mapping[str, Any],
) -> None:
    """Change the row of (channel, window) only while `instance` holds its claim (a row
    taken over by another sender, or for another window since, is theirs)."""
    start, end = window
    with engine.begin() as connection:
        connection.execute(
            update(DIGEST_RUNS)
            .where(
                (DIGEST_RUNS.c.channel == channel)
                & (DIGEST_RUNS.c.window_start == start)
                & (DIGEST_RUNS.c.window_end == end)
                & (DIGEST_RUNS.c.claimed_by == instance)
            )
            .values(**values)
        )


# A window whose send went out without an answer may have arrived: its row's summary counts
# such sends (`unanswered`) until it is sent, and it is sent once more at most.
UNANSWERED = "unanswered"


def unanswered_sends(engine: Engine, channel: str, window: tuple[datetime, datetime]) -> int:
    """How many sends of (channel, window) went out without an answer (they may have
    arrived), as its row's summary counts them."""
    start, end = window
    with engine.connect() as connection:
        summary = connection.execute(
            select(DIGEST_RUNS.c.summary).where(
                (DIGEST_RUNS.c.channel == channel)
                & (DIGEST_RUNS.c.window_start == start)
                & (DIGEST_RUNS.c.window_end == end)
            )
        ).scalar()
    count = (summary or {}).get(UNANSWERED, 0) if isinstance(summary, dict) else 0
    return int(count) if isinstance(count, int) else 0


def purge_digest_runs(engine: Engine, before: datetime, batch: int) -> int:
    """Retention: delete up to `batch` digest records of windows that ended before `before`,
    but for each channel's newest: it is where the next window starts from (with none, the
    latest window is due again: a weekly digest under a 3-day retention was sent again after
    every purge)."""
    newer = DIGEST_RUNS.alias("newer")
    newest = (
        select(func.max(newer.c.window_end))
        .where(newer.c.channel == DIGEST_RUNS.c.channel)
        .scalar_subquery()
    )
    where = (DIGEST_RUNS.c.window_end < before) & (DIGEST_RUNS.c.window_end < newest)
    return delete_batch(engine, DIGEST_RUNS, where, batch)
