"""Remediation tasks ride on the inbox: same claiming, retries, dead letters and `replay`.

Handlers (and the poller) ask for remediation by enqueuing a task row in `inbox_events`
with style `task`, in the same transaction as the records they write. The task id is
deterministic (`mfx_task_<kind>_<ref>`), so asking twice stores one task. The worker runs
tasks outside any long transaction: a remediation downloads and uploads files.
"""

from __future__ import annotations

import json
from enum import StrEnum

from sqlalchemy import Connection, select

from service.db.statements import insert_or_ignore
from service.models._types import table_of, utcnow
from service.models.inbox import InboxEvent, InboxStatus

TASK_STYLE = "task"
TASK_TYPE_PREFIX = "meterfix.remediate."


class TaskKind(StrEnum):
    IMPORT_SET_ERRORS = "import_set_errors"  # failed-records file of a succeeded import set
    IMPORT_SET_FAILED = "import_set_failed"  # whole-file failure: repair the source file
    ERROR_REPORT = "error_report"  # meter error report whose rows we imported
    POLLER_ROWS = "poller_rows"  # rows the bundled poller found invalid
    QUARANTINE_RERUN = "quarantine_rerun"  # quarantined rows again, current rules (ref: action)


def task_id(kind: TaskKind, ref: str) -> str:
    return f"mfx_task_{kind.value}_{ref}"[:255]


def enqueue_task(connection: Connection, kind: TaskKind, ref: str) -> bool:
    """Store the task unless it exists; True when it was new."""
    table = table_of(InboxEvent)
    values = {
        "event_id": task_id(kind, ref),
        "event_type": TASK_TYPE_PREFIX + kind.value,
        "style": TASK_STYLE,
        "livemode": False,
        "body": json.dumps({"kind": kind.value, "ref": ref}),
        "received_at": utcnow(),
        "status": InboxStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": utcnow(),
    }
    dialect = connection.dialect.name
    if dialect in ("postgresql", "sqlite"):
        # the id it returns says whether it was new: PostgreSQL's row count of an insert
        # that returns its key was -1 (read as new) for a row it skipped
        statement = insert_or_ignore(dialect, table).values(values).returning(table.c.id)
        return connection.execute(statement).first() is not None
    # another engine: check first (the worker is the only writer of tasks)
    exists = connection.execute(
        select(table.c.id).where(table.c.event_id == values["event_id"])
    ).first()
    if exists is not None:
        return False
    return bool(connection.execute(table.insert().values(values)).rowcount)


def parse_task(body: str) -> tuple[TaskKind, str]:
    data = json.loads(body)
    return TaskKind(data["kind"]), str(data["ref"])
