"""What queueing a quarantine re-run counts and keeps: the rows a filter would take (counted
when the re-run is queued, under `lock_rerun_inputs`, which retention takes too), the newest
row then, and what the admin action that queued it kept, which the re-run task reads back.
Only queueing a re-run, the re-run task and retention's lock use these."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from service.db.locks import transaction_lock
from service.jobs.store.quarantine import QUARANTINE, quarantine_conditions
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.models._types import as_utc, table_of
from service.models.alerts import AdminAction

ACTIONS = table_of(AdminAction)


def rerun_detail(connection: Connection, action_id: int) -> Mapping[str, Any] | None:
    """What the admin action that queued a quarantine re-run kept (its `filters`, and the
    newest row then, `through`), or None when the action is gone. The dashboard and the API
    record the action (`service.web.actions`); the re-run task reads its input here."""
    detail = connection.execute(select(ACTIONS.c.detail).where(ACTIONS.c.id == action_id)).scalar()
    return detail if isinstance(detail, dict) else None


def rerun_queued_at(connection: Connection, action_id: int) -> datetime | None:
    """When the admin action that queued a quarantine re-run was taken: the re-run's
    reference time, the same however often the task is run again after a crash."""
    query = select(ACTIONS.c.created_at).where(ACTIONS.c.id == action_id)
    return as_utc(connection.execute(query).scalar())


def count_quarantine(connection: Connection, found: QuarantineFilter) -> int:
    """The rows a re-run of `found` would take: not the rows their object sent again since
    (`mark_taken_again`), which it leaves, nor the rows another re-run took (listed with
    their runs' rows, `run=`; `rows_to_rerun` never takes them)."""
    where = [
        *quarantine_conditions(found),
        QUARANTINE.c.taken_again.is_(None),
        QUARANTINE.c.rerun_id.is_(None),
    ]
    query = select(func.count()).select_from(QUARANTINE).where(*where)
    return int(connection.execute(query).scalar_one())


def latest_quarantined_id(connection: Connection) -> int:
    """The newest quarantined row's id (0 when there is none): a re-run takes no row after
    the one its operator's filter saw last."""
    return int(connection.execute(select(func.max(QUARANTINE.c.id))).scalar() or 0)


# The seed of the lock on what a quarantine re-run reads ("mfx_rrin", `lock_rerun_inputs`).
# Not the seed of the lock a re-run task holds while it runs (`quarantine_rerun.
# RERUN_LOCK_KEY`, "mfx_reru"): it was, so a click on "Re-run" waited in the web request for
# as long as a re-run ran (minutes for a large one). Retention's check for a re-run queued,
# running or dead-lettered (`any_unfinished`) is what keeps a running re-run's rows.
RERUN_INPUTS_LOCK = 0x6D66785F7272696E


def lock_rerun_inputs(connection: Connection, *, shared: bool) -> None:
    """Hold, until the caller's transaction ends, the rows a quarantine re-run reads (the
    quarantined rows and their audit): queueing a re-run holds it `shared` from its count to
    its task, a retention batch alone from its check for a waiting re-run to its delete, so
    neither comes between the other's two steps (a re-run queued there had its rows
    deleted after they were counted). First in the transaction (`transaction_lock`)."""
    transaction_lock(connection, RERUN_INPUTS_LOCK, shared=shared)
