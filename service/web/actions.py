"""Admin actions: acknowledge or resolve an alert, replay an event, re-run quarantined rows.
Each one is recorded in `admin_actions` (time, source address, api|dashboard) in the same
transaction as its effect, and shown on the item it touched."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from service.errors import Conflict, NotFound
from service.intake.store import INBOX
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.jobs.store.rerun_queue import (
    count_quarantine,
    latest_quarantined_id,
    lock_rerun_inputs,
)
from service.models import AdminActionName
from service.models._types import utcnow
from service.models.alerts import AlertStatus
from service.notify.store import change_alert_from
from service.web.store import find_event, get_alert, record_action
from service.worker.inbox import replay_in
from service.worker.tasks import TaskKind, enqueue_task, task_id


@dataclass(frozen=True)
class Actor:
    """Who acts: how (api|dashboard) and from which address."""

    via: str
    address: str


# An alert may be acknowledged while open, resolved while open or acknowledged.
ALLOWED_FROM = {
    AlertStatus.ACKNOWLEDGED: {AlertStatus.OPEN.value},
    AlertStatus.RESOLVED: {AlertStatus.OPEN.value, AlertStatus.ACKNOWLEDGED.value},
}
ACTION_NAMES = {
    AlertStatus.ACKNOWLEDGED: AdminActionName.ACKNOWLEDGE,
    AlertStatus.RESOLVED: AdminActionName.RESOLVE,
}


def change_alert(engine: Engine, alert_id: int, to: AlertStatus, actor: Actor) -> dict[str, Any]:
    """Acknowledge or resolve by hand; the alert as it is afterwards, with its actions. The
    change is made only from the status read (two actions at once: the second is a Conflict,
    recorded nowhere; both were made, each recorded "from open")."""
    with engine.begin() as connection:
        alert = get_alert(connection, alert_id)
        if alert is None:
            raise NotFound(f"no alert with id {alert_id}")
        was = alert["status"]
        if was not in ALLOWED_FROM[to]:
            raise Conflict(f"alert {alert_id} is {was}: cannot {ACTION_NAMES[to]}")
        if not change_alert_from(connection, alert_id, was, _status_values(to)):
            raise _changed_since_read(connection, alert_id, to)
        record_action(
            connection,
            ACTION_NAMES[to],
            "alert",
            str(alert_id),
            via=actor.via,
            source_address=actor.address,
            detail={"from": was},
        )
        changed = get_alert(connection, alert_id)
    assert changed is not None
    return changed


def _changed_since_read(connection: Connection, alert_id: int, to: AlertStatus) -> Exception:
    """Another action changed (or the retention purged) the alert since it was read."""
    now = get_alert(connection, alert_id)
    if now is None:
        return NotFound(f"no alert with id {alert_id}")
    return Conflict(f"alert {alert_id} is {now['status']}: cannot {ACTION_NAMES[to]}")


def _status_values(to: AlertStatus) -> dict[str, Any]:
    """The alert's new status and the time it took it."""
    at = "acknowledged_at" if to is AlertStatus.ACKNOWLEDGED else "resolved_at"
    return {"status": to.value, at: utcnow()}


def replay_event(engine: Engine, ref: str, actor: Actor, lease: timedelta) -> dict[str, Any]:
    """Make a stored event pending again, whatever its state, but while a live worker holds
    it (its `lease` not expired: a second worker would run it beside the first), as
    `meterfix replay` does: a Conflict then."""
    with engine.begin() as connection:
        event = find_event(connection, ref)
        if event is None:
            raise NotFound(f"no event {ref!r} in the inbox")
        outcome = replay_in(connection, INBOX.c.id == int(event["id"]), lease)
        if outcome.held_by is not None:
            raise Conflict(
                f"event {event['event_id']} is being processed by worker {outcome.held_by}: "
                "not re-queued (replay it once that worker has finished; a worker that died "
                f"lets go of it {int(lease.total_seconds())} s after its last heartbeat)"
            )
        record_action(
            connection,
            AdminActionName.REPLAY,
            "event",
            event["event_id"],
            via=actor.via,
            source_address=actor.address,
            detail={"from": event["status"], "attempts": event["attempts"]},
        )
        replayed = find_event(connection, event["event_id"])
    assert replayed is not None
    return replayed


def queue_rerun(engine: Engine, found: QuarantineFilter, actor: Actor) -> dict[str, Any]:
    """Queue a task that re-runs the matching rows with the current rules (the filter is
    kept on the admin action, which the task reads)."""
    with engine.begin() as connection:
        lock_rerun_inputs(connection, shared=True)  # no retention batch between count and task
        rows = count_quarantine(connection, found)
        through = latest_quarantined_id(connection)
        if rows == 0:
            return {"queued": False, "rows": 0, "filters": found.as_query()}
        action_id = record_action(
            connection,
            AdminActionName.RERUN,
            "quarantine",
            _describe(found),
            via=actor.via,
            source_address=actor.address,
            # `through`: the newest row then, so the task takes the rows counted here and
            # none quarantined after the operator asked (nor, when retried, any other)
            detail={"filters": found.as_query(), "rows": rows, "through": through},
        )
        enqueue_task(connection, TaskKind.QUARANTINE_RERUN, str(action_id))
    return {
        "queued": True,
        "rows": rows,
        "action_id": action_id,
        "task": task_id(TaskKind.QUARANTINE_RERUN, str(action_id)),
        "filters": found.as_query(),
    }


def _describe(found: QuarantineFilter) -> str:
    """The re-run's target: its filter as a query string ("all" when there is none)."""
    query = found.as_query()
    return "&".join(f"{key}={value}" for key, value in sorted(query.items())) or "all"
