"""The statements `ProgressStore.record_sending` (service.poller.progress) runs in its one
transaction: which of a pass's batches were recorded before, recording them as sent, and the
object version's first send time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import ModuleType
from typing import Any

from sqlalchemy import Connection, select, update

from service.models import BucketObject, PollerBatch
from service.models._types import table_of

OBJECTS = table_of(BucketObject)
BATCHES = table_of(PollerBatch)


def sending_rows(
    object_id: int, batches: Sequence[tuple[int, int, int]], now: datetime
) -> list[dict[str, Any]]:
    """The `poller_batches` rows of (number, first_row, rows) batches sent `now`."""
    return [
        {
            "object_id": object_id,
            "batch_number": n,
            "first_row": f,
            "rows": r,
            "first_sent_at": now,
        }
        for n, f, r in batches
    ]


def recorded_cuts(
    conn: Connection, object_id: int, numbers: Sequence[int]
) -> dict[int, tuple[int, int, Any]]:
    """number -> (first_row, rows, acked_at) of the batches recorded before, from the lowest
    of `numbers` to the highest."""
    return {
        int(row[0]): (int(row[1]), int(row[2]), row[3])
        for row in conn.execute(
            select(
                BATCHES.c.batch_number,
                BATCHES.c.first_row,
                BATCHES.c.rows,
                BATCHES.c.acked_at,
            ).where(
                BATCHES.c.object_id == object_id,
                BATCHES.c.batch_number.between(min(numbers), max(numbers)),
            )
        )
    }


def record_sent(conn: Connection, dialect: ModuleType, values: list[dict[str, Any]]) -> None:
    """Insert the batches' rows; a batch recorded before takes this cut, unacknowledged."""
    insert = dialect.insert(BATCHES)
    again = {"first_row": insert.excluded.first_row, "rows": insert.excluded.rows}
    upsert = insert.on_conflict_do_update(
        index_elements=["object_id", "batch_number"], set_={**again, "acked_at": None}
    )
    conn.execute(upsert, values)


def mark_first_sent(conn: Connection, object_id: int, now: datetime) -> None:
    """The object version's first send time, unless it has one."""
    conn.execute(
        update(OBJECTS)
        .where(OBJECTS.c.id == object_id, OBJECTS.c.first_sent_at.is_(None))
        .values(first_sent_at=now)
    )
