"""The admin views' queries over alerts, inbox events and admin actions: keyset pages (id below
the cursor, newest first), each row as a JSON-ready dict with the admin actions on it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    func,
    insert,
    literal_column,
    select,
)

from service.db import Listing, Page, keyset
from service.models import AdminActionName
from service.models._types import as_utc, table_of, utcnow
from service.models.alerts import AdminAction, Alert, AlertSeverity, AlertStatus
from service.models.inbox import InboxEvent, InboxStatus

ALERTS = table_of(Alert)
EVENTS = table_of(InboxEvent)
ACTIONS = table_of(AdminAction)
ERROR_PREVIEW = 500  # characters of an event's last error in lists
RARE_STATUS_ROWS = 2000  # fewer events than this in a status: read them from its index


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
    query = select(ALERTS)
    if status is not None:
        query = query.where(ALERTS.c.status == status.value)
    if severity is not None:
        query = query.where(ALERTS.c.severity == severity.value)
    with engine.connect() as connection:
        listing = keyset(connection, query, ALERTS.c.id, page)
        actions = actions_on(connection, "alert", [str(row["id"]) for row in listing.data])
    data = [alert_json(row, actions.get(str(row["id"]), [])) for row in listing.data]
    return Listing(data, listing.next_cursor)


def get_alert(connection: Connection, alert_id: int) -> dict[str, Any] | None:
    row = connection.execute(select(ALERTS).where(ALERTS.c.id == alert_id)).first()
    if row is None:
        return None
    actions = actions_on(connection, "alert", [str(alert_id)])
    return alert_json(dict(row._mapping), actions[str(alert_id)])


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


def open_alert_counts(connection: Connection) -> dict[str, int]:
    """Open alerts by severity, counted here from the status index: with a GROUP BY, SQLite
    walks the severity index over every alert ever kept instead (resolved ones are most)."""
    severities: Sequence[str] = (
        connection.execute(
            select(ALERTS.c.severity).where(ALERTS.c.status == AlertStatus.OPEN.value)
        )
        .scalars()
        .all()
    )
    counts = {severity.value: 0 for severity in AlertSeverity}
    counts.update(Counter(str(severity) for severity in severities))
    return counts


# --- inbox events --------------------------------------------------------------------------

EVENT_COLUMNS = (
    EVENTS.c.id,
    EVENTS.c.event_id,
    EVENTS.c.event_type,
    EVENTS.c.style,
    EVENTS.c.livemode,
    EVENTS.c.status,
    EVENTS.c.attempts,
    EVENTS.c.last_error,
    EVENTS.c.outcome,
    EVENTS.c.received_at,
    EVENTS.c.next_attempt_at,
    EVENTS.c.processed_at,
)


def list_events(engine: Engine, page: Page, status: InboxStatus | None = None) -> Listing:
    query = select(*EVENT_COLUMNS)
    with engine.connect() as connection:
        if status is not None:
            query = query.where(_status_is(connection, status))
        listing = keyset(connection, query, EVENTS.c.id, page)
        actions = actions_on(connection, "event", [row["event_id"] for row in listing.data])
    data = [event_json(row, actions.get(row["event_id"], [])) for row in listing.data]
    return Listing(data, listing.next_cursor)


def _status_is(connection: Connection, status: InboxStatus) -> ColumnElement[bool]:
    """`status = ?`, marked unlikely for SQLite when the status is rare.

    Most events are done; dead letters and pending items are few. SQLite's statistics hold
    only the average number of rows per status, so for `status = 'dead' ORDER BY id DESC` it
    walks the whole inbox backwards (bodies included) to find a few rows: 120 ms for 20,000
    events. When a count bounded on the status index finds fewer than RARE_STATUS_ROWS,
    `likelihood()` says so, and SQLite reads them from that index and sorts them instead.
    PostgreSQL keeps statistics per value and needs no hint."""
    condition = EVENTS.c.status == status.value
    if connection.dialect.name != "sqlite":
        return condition
    some = select(EVENTS.c.id).where(condition).limit(RARE_STATUS_ROWS).subquery()
    if connection.execute(select(func.count()).select_from(some)).scalar_one() >= RARE_STATUS_ROWS:
        return condition
    # The probability must be a constant in the SQL text (a bound parameter is refused), and
    # the call must stand alone: typed Boolean, SQLAlchemy would compare it to 1, hiding it.
    return func.likelihood(condition, literal_column("0.001"))


def find_event(connection: Connection, ref: str) -> dict[str, Any] | None:
    """An inbox event by its event id (`evt_…`, `mfx_task_…`), or by its row id."""
    row = connection.execute(select(*EVENT_COLUMNS).where(EVENTS.c.event_id == ref)).first()
    if row is None and ref.isascii() and ref.isdigit() and len(ref) < 18:
        row = connection.execute(select(*EVENT_COLUMNS).where(EVENTS.c.id == int(ref))).first()
    if row is None:
        return None
    data = dict(row._mapping)
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


def count_events(connection: Connection, status: InboxStatus) -> int:
    return int(
        connection.execute(
            select(func.count()).select_from(EVENTS).where(EVENTS.c.status == status.value)
        ).scalar_one()
    )
