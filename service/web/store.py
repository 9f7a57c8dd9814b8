"""The admin actions' store (the dashboard and the API record them), and the admin views of
alerts and inbox events: keyset pages (id below the cursor, newest first) read from the notify
and inbox stores, each row as a JSON-ready dict with the admin actions on it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    insert,
    select,
)

from service.db.pages import Listing, Page
from service.intake import store as inbox
from service.models import AdminActionName
from service.models._types import as_utc, table_of, utcnow
from service.models.alerts import AdminAction, AlertSeverity, AlertStatus
from service.models.inbox import InboxStatus
from service.notify import store as alerts_store

ACTIONS = table_of(AdminAction)
ERROR_PREVIEW = 500  # characters of an event's last error in lists


def iso(value: datetime | None) -> str | None:
    stamp = as_utc(value)
    return None if stamp is None else stamp.isoformat()


# --- admin actions -------------------------------------------------------------------------


def record_action(
    connection: Connection,
    action: AdminActionName,
    target_type: str,
    target_id: str,
    *,
    via: str,
    source_address: str,
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Record who did what to which item, from where; the action's id."""
    result = connection.execute(
        insert(ACTIONS)
        .values(
            action=action,
            target_type=target_type,
            target_id=target_id[:512],
            source_address=(source_address or "")[:255],
            via=via,
            detail=dict(detail or {}),
            created_at=utcnow(),
        )
        .returning(ACTIONS.c.id)
    )
    return int(result.scalar_one())


def actions_on(
    connection: Connection, target_type: str, target_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Admin actions per item, oldest first (one indexed query for a whole page)."""
    found: dict[str, list[dict[str, Any]]] = {target: [] for target in target_ids}
    if not target_ids:
        return found
    rows = connection.execute(
        select(ACTIONS)
        .where(ACTIONS.c.target_type == target_type, ACTIONS.c.target_id.in_(target_ids))
        .order_by(ACTIONS.c.id)
    ).all()
    for row in rows:
        found.setdefault(row.target_id, []).append(action_json(dict(row._mapping)))
    return found


def action_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "action": row["action"],
        "target_type": row["target_type"],
        "target_id": row["target_id"],
        "via": row["via"],
        "source_address": row["source_address"],
        "detail": row["detail"],
        "created_at": iso(row["created_at"]),
    }


def get_action(connection: Connection, action_id: int) -> dict[str, Any] | None:
    row = connection.execute(select(ACTIONS).where(ACTIONS.c.id == action_id)).first()
    return None if row is None else action_json(dict(row._mapping))


def recent_actions(
    connection: Connection, action: AdminActionName, limit: int = 10
) -> list[dict[str, Any]]:
    rows = connection.execute(
        select(ACTIONS).where(ACTIONS.c.action == action).order_by(ACTIONS.c.id.desc()).limit(limit)
    ).all()
    return [action_json(dict(row._mapping)) for row in rows]


# --- alerts --------------------------------------------------------------------------------


def list_alerts(
    engine: Engine,
    page: Page,
    status: AlertStatus | None = None,
    severity: AlertSeverity | None = None,
) -> Listing:
    with engine.connect() as connection:
        listing = alerts_store.list_alerts(connection, page, status, severity)
        actions = actions_on(connection, "alert", [str(row["id"]) for row in listing.data])
    data = [alert_json(row, actions.get(str(row["id"]), [])) for row in listing.data]
    return Listing(data, listing.next_cursor)


def get_alert(connection: Connection, alert_id: int) -> dict[str, Any] | None:
    row = alerts_store.get_alert(connection, alert_id)
    if row is None:
        return None
    actions = actions_on(connection, "alert", [str(alert_id)])
    return alert_json(row, actions[str(alert_id)])


def alert_json(row: Mapping[str, Any], actions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "key": row["alert_key"],
        "severity": row["severity"],
        "status": row["status"],
        "kind": row["kind"],
        "subject": row["subject"],
        "message": row["message"],
        "meter": row["meter"],
        "code": row["code"],
        "customer": row["customer"],
        "count": row["count"],
        "rows": row["rows"],
        "links": row["links"],
        "created_at": iso(row["created_at"]),
        "last_seen_at": iso(row["last_seen_at"]),
        "acknowledged_at": iso(row["acknowledged_at"]),
        "resolved_at": iso(row["resolved_at"]),
        "notified_at": iso(row["notified_at"]),
        "actions": actions,
    }


# --- inbox events --------------------------------------------------------------------------


def list_events(engine: Engine, page: Page, status: InboxStatus | None = None) -> Listing:
    with engine.connect() as connection:
        listing = inbox.list_events(connection, page, status)
        actions = actions_on(connection, "event", [row["event_id"] for row in listing.data])
    data = [event_json(row, actions.get(row["event_id"], [])) for row in listing.data]
    return Listing(data, listing.next_cursor)


def find_event(connection: Connection, ref: str) -> dict[str, Any] | None:
    """An inbox event by its event id (`evt_…`, `mfx_task_…`), or by its row id."""
    data = inbox.find_event(connection, ref)
    if data is None:
        return None
    return event_json(data, actions_on(connection, "event", [data["event_id"]])[data["event_id"]])


def event_json(row: Mapping[str, Any], actions: list[dict[str, Any]]) -> dict[str, Any]:
    error = row["last_error"]
    return {
        "id": row["id"],
        "event_id": row["event_id"],
        "type": row["event_type"],
        "style": row["style"],
        "livemode": bool(row["livemode"]),
        "status": row["status"],
        "attempts": row["attempts"],
        "last_error": None if error is None else error[:ERROR_PREVIEW],
        "outcome": row["outcome"],
        "received_at": iso(row["received_at"]),
        "next_attempt_at": iso(row["next_attempt_at"]),
        "processed_at": iso(row["processed_at"]),
        "actions": actions,
    }
