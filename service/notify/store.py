"""The notify room's store of alerts: every query over them. `alerts.py` decides an alert's
life (what raising, resolving, acknowledging means) and writes through here; the dashboard,
the admin API, /metrics and the digests read alerts here, and the critical-message job finds
the alerts due and records their progress here. The claims of critical messages
(`critical_messages`, rows of an alert, deleted with it) have their own store
(`message_store.py`), as digest runs, another aggregate, do (`digest_store.py`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from service.db.pages import Listing, Page, keyset
from service.db.statements import delete_batch, insert_or_ignore
from service.models._types import table_of
from service.models.alerts import Alert, AlertSeverity, AlertStatus

ALERTS = table_of(Alert)


# --- alerts: writes (service.notify.alerts decides what they mean) -------------------------


def insert_alert(connection: Connection, key: str, values: Mapping[str, Any]) -> bool:
    """Insert the alert `key` unless it exists; whether it was inserted."""
    inserted = connection.execute(
        insert_or_ignore(connection.dialect.name, ALERTS, ["alert_key"])
        .values(alert_key=key, **values)
        .returning(ALERTS.c.id)  # rowcount is -1 here on PostgreSQL
    ).first()
    return inserted is not None


def alert_exists(connection: Connection, key: str) -> bool:
    found = connection.execute(select(ALERTS.c.id).where(ALERTS.c.alert_key == key)).first()
    return found is not None


def alert_state(connection: Connection, key: str) -> tuple[str, Any]:
    """The status and detail of the alert `key` (which exists)."""
    status, detail = connection.execute(
        select(ALERTS.c.status, ALERTS.c.detail).where(ALERTS.c.alert_key == key)
    ).one()
    return str(status), detail


def count_alert_again(connection: Connection, key: str, values: Mapping[str, Any]) -> None:
    """One more occurrence of the alert `key`, with these new values."""
    connection.execute(
        update(ALERTS).where(ALERTS.c.alert_key == key).values(count=ALERTS.c.count + 1, **values)
    )


def resolve_alert_by_key(target: Engine | Connection, key: str, at: datetime) -> bool:
    """Resolve the open or acknowledged alert `key`; False when there is none."""
    statement = (
        update(ALERTS)
        .where(ALERTS.c.alert_key == key, ALERTS.c.status != AlertStatus.RESOLVED)
        .values(status=AlertStatus.RESOLVED.value, resolved_at=at)
    )
    if isinstance(target, Engine):
        with target.begin() as connection:
            return connection.execute(statement).rowcount == 1
    return target.execute(statement).rowcount == 1


def change_alert_from(
    connection: Connection, alert_id: int, was: str, values: Mapping[str, Any]
) -> bool:
    """Change the alert `alert_id` only while its status is still `was` (an admin action read
    it so); False when it is not. One statement: of two actions at once, the second waits for
    the first's row (or SQLite's write lock) and then finds the status changed."""
    statement = update(ALERTS).where(ALERTS.c.id == alert_id, ALERTS.c.status == was)
    return connection.execute(statement.values(**values)).rowcount == 1


# --- alerts: reads -------------------------------------------------------------------------


def list_alerts(
    connection: Connection,
    page: Page,
    status: AlertStatus | None = None,
    severity: AlertSeverity | None = None,
) -> Listing:
    query = select(ALERTS)
    if status is not None:
        query = query.where(ALERTS.c.status == status.value)
    if severity is not None:
        query = query.where(ALERTS.c.severity == severity.value)
    return keyset(connection, query, ALERTS.c.id, page)


def get_alert(connection: Connection, alert_id: int) -> dict[str, Any] | None:
    row = connection.execute(select(ALERTS).where(ALERTS.c.id == alert_id)).first()
    return None if row is None else dict(row._mapping)


def latest_open_alerts(connection: Connection, limit: int) -> list[dict[str, Any]]:
    """Open alerts, the most recently seen first."""
    rows = connection.execute(
        select(ALERTS)
        .where(ALERTS.c.status == AlertStatus.OPEN.value)
        .order_by(ALERTS.c.last_seen_at.desc())
        .limit(limit)
    ).all()
    return [dict(row._mapping) for row in rows]


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


def alert_counts(connection: Connection) -> dict[tuple[str, str], int]:
    """Alerts per (severity, status), for the pairs that have any."""
    count = func.count().label("alerts")
    rows = connection.execute(
        select(ALERTS.c.severity, ALERTS.c.status, count).group_by(
            ALERTS.c.severity, ALERTS.c.status
        )
    )
    return {(str(row.severity), str(row.status)): int(row.alerts) for row in rows}


def unresolved_critical_alerts(connection: Connection, limit: int) -> list[tuple[str, str, int]]:
    """(subject, status, count) of critical alerts not resolved, most recently seen first."""
    rows = connection.execute(
        select(ALERTS.c.subject, ALERTS.c.status, ALERTS.c.count)
        .where(
            (ALERTS.c.severity == AlertSeverity.CRITICAL)
            & (ALERTS.c.status != AlertStatus.RESOLVED)
        )
        .order_by(ALERTS.c.last_seen_at.desc())
        .limit(limit)
    )
    return [(str(row[0]), str(row[1]), int(row[2])) for row in rows]


def count_unresolved_critical_alerts(connection: Connection) -> int:
    unresolved = (ALERTS.c.severity == AlertSeverity.CRITICAL) & (
        ALERTS.c.status != AlertStatus.RESOLVED
    )
    query = select(func.count()).select_from(ALERTS).where(unresolved)
    return int(connection.execute(query).scalar() or 0)


def alerts_seen_between(
    connection: Connection, start: datetime, end: datetime, severity: AlertSeverity, limit: int
) -> list[tuple[str, str, str, int]]:
    """(kind, subject, status, count) of `severity` alerts raised (or raised again) in
    [start, end), most recently seen first."""
    seen = (ALERTS.c.last_seen_at >= start) & (ALERTS.c.last_seen_at < end)
    rows = connection.execute(
        select(ALERTS.c.kind, ALERTS.c.subject, ALERTS.c.status, ALERTS.c.count)
        .where(seen & (ALERTS.c.severity == severity))
        .order_by(ALERTS.c.last_seen_at.desc(), ALERTS.c.id.desc())
        .limit(limit)
    )
    return [(str(row[0]), str(row[1]), str(row[2]), int(row[3])) for row in rows]


def count_alerts_seen_between(
    connection: Connection,
    start: datetime,
    end: datetime,
    severity: AlertSeverity | None = None,
) -> int:
    """Alerts (of `severity`, or all) raised (or raised again) in [start, end)."""
    seen = (ALERTS.c.last_seen_at >= start) & (ALERTS.c.last_seen_at < end)
    if severity is not None:
        seen &= ALERTS.c.severity == severity
    query = select(func.count()).select_from(ALERTS).where(seen)
    return int(connection.execute(query).scalar() or 0)


def purge_resolved_alerts(engine: Engine, before: datetime, batch: int) -> int:
    """Retention: delete up to `batch` alerts resolved before `before`."""
    where = (ALERTS.c.status == AlertStatus.RESOLVED) & (ALERTS.c.resolved_at < before)
    return delete_batch(engine, ALERTS, where, batch)


# --- critical messages: the alerts due, and their progress ---------------------------------


def critical_alerts_to_notify(
    engine: Engine, *, resolved: bool, limit: int, after: int = 0
) -> list[dict[str, Any]]:
    """Critical alerts whose message is not sent yet, oldest first, ids past `after` (a page
    at a time): raised (never notified, resolved since or not: an incident resolved while a
    channel still waited for its message is closed out by the sender), or `resolved`
    (notified when raised, its resolution not yet)."""
    critical = (ALERTS.c.severity == AlertSeverity.CRITICAL) & (ALERTS.c.id > after)
    if not resolved:
        where = critical & ALERTS.c.notified_at.is_(None)
    else:
        where = (
            critical
            & (ALERTS.c.status == AlertStatus.RESOLVED)
            & ALERTS.c.notified_at.is_not(None)
            & ALERTS.c.resolved_notified_at.is_(None)
        )
    with engine.connect() as connection:
        rows = connection.execute(select(ALERTS).where(where).order_by(ALERTS.c.id).limit(limit))
        return [dict(row._mapping) for row in rows]


NOTIFY_STATE = "notify"  # the key of `detail` holding a critical message's progress


def record_notification(
    engine: Engine,
    alert: Mapping[str, Any],
    *,
    resolved: bool,
    state: Mapping[str, Any],
    finished_at: datetime | None,
    close_resolved: bool = False,
) -> bool:
    """Keep a critical message's progress (`state`) in the alert's detail, beside what the
    alert's raising wrote there since it was read; `finished_at` marks the phase (`resolved`
    or raised) sent or given up, and with `close_resolved` the resolved phase too (nothing
    to follow up). Only while the alert is still the incident read (`created_at`: one
    resolved and raised again meanwhile is another incident, due for its own message) and
    the phase is still unmarked: two senders never both mark it. Whether it was written."""
    column = ALERTS.c.resolved_notified_at if resolved else ALERTS.c.notified_at
    values: dict[str, Any] = {}
    if finished_at is not None:
        values[column.name] = finished_at
        if close_resolved:
            values[ALERTS.c.resolved_notified_at.name] = finished_at
    where = (ALERTS.c.id == alert["id"]) & (ALERTS.c.created_at == alert["created_at"])
    where &= column.is_(None)
    with engine.begin() as connection:
        current = connection.execute(select(ALERTS.c.detail).where(where).with_for_update()).first()
        if current is None:
            return False
        detail = dict(current[0] or {}) if isinstance(current[0], dict) else {}
        values["detail"] = {**detail, NOTIFY_STATE: dict(state)}
        connection.execute(update(ALERTS).where(where).values(**values))
        return True


# --- silence checks ------------------------------------------------------------------------


def unresolved_keys(connection: Connection, keys: Sequence[str]) -> set[str]:
    """Which of these alert keys name an alert that is not resolved."""
    query = select(ALERTS.c.alert_key).where(
        ALERTS.c.alert_key.in_(list(keys)) & (ALERTS.c.status != AlertStatus.RESOLVED)
    )
    return set(connection.execute(query).scalars())


def unresolved_keys_of_kind(connection: Connection, kind: str) -> set[str]:
    """The keys of the alerts of this kind that are not resolved."""
    query = select(ALERTS.c.alert_key).where(
        (ALERTS.c.kind == kind) & (ALERTS.c.status != AlertStatus.RESOLVED)
    )
    return set(connection.execute(query).scalars())
