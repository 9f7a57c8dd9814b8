"""The one alert function, and an alert's life: open -> acknowledged -> resolved.

An alert is one incident, named by a deterministic key. Raising the same key again is the
same alert with a higher `count` (its message is not sent again while it stays open or
acknowledged); raising a resolved alert opens it again as a new incident, due for a message.
Resolving happens by a later success of the same thing (the caller names the key) or by hand.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine

from service.logs import log_event
from service.models._types import utcnow
from service.models.alerts import AlertSeverity, AlertStatus
from service.notify import store

TEXT_LIMIT = 2000
KEY_CHARS = 512  # the alert_key column's length
# Key in `detail` where the critical-message job keeps its per-channel progress
# (service.notify.critical); kept while the incident lasts, dropped when it opens again.
NOTIFY_STATE = store.NOTIFY_STATE


def raise_alert(
    target: Engine | Connection,
    *,
    key: str,
    severity: str,
    kind: str,
    subject: str,
    message: str,
    detail: Mapping[str, Any] | None = None,
    meter: str | None = None,
    code: str | None = None,
    customer: str | None = None,
    rows: int = 0,
    links: Mapping[str, Any] | None = None,
) -> None:
    """Open the alert, or count another occurrence of it (reopening it if it was resolved).

    `target` is an engine (own transaction) or a connection (the caller's transaction, so
    the alert commits with what caused it)."""
    severity = AlertSeverity(severity)
    key = stored_key(key)
    now = utcnow()
    values: dict[str, Any] = {
        "severity": severity.value,
        "kind": kind[:64],
        "subject": subject[:TEXT_LIMIT],
        "message": message[:TEXT_LIMIT],
        "detail": dict(detail or {}),
        "meter": _short(meter),
        "code": _short(code),
        "customer": _short(customer),
        "rows": rows,
        "links": dict(links or {}),
        "last_seen_at": now,
    }
    if isinstance(target, Engine):
        with target.begin() as connection:
            _upsert(connection, key, values, now)
    else:
        _upsert(target, key, values, now)
    level = logging.ERROR if severity is AlertSeverity.CRITICAL else logging.WARNING
    log_event("alert.raised", level=level, key=key, kind=kind, severity=severity.value)


def stored_key(key: str) -> str:
    """An alert's key as its column holds it: a key past `KEY_CHARS` (one naming an object
    whose key is long, S3 allowing 1,024 bytes) is cut and ends in the SHA-256 of the whole,
    so that it stays one alert's and the same each time (PostgreSQL refused the insert, and
    whatever raised the alert failed with it)."""
    if len(key) <= KEY_CHARS:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{key[: KEY_CHARS - len(digest) - 8]}\u2026sha256:{digest}"


def _upsert(connection: Connection, key: str, values: dict[str, Any], now: Any) -> None:
    new = {"status": AlertStatus.OPEN.value, "count": 1, "created_at": now, "notified_at": None}
    if store.insert_alert(connection, key, {**new, **values}):
        return
    status, detail = store.alert_state(connection, key)
    again: dict[str, Any] = {}
    if status != AlertStatus.RESOLVED and isinstance(detail, dict) and NOTIFY_STATE in detail:
        # the same incident: keep what was already sent on which channel
        values = {**values, "detail": {**values["detail"], NOTIFY_STATE: detail[NOTIFY_STATE]}}
    if status == AlertStatus.RESOLVED:  # a new incident of the same thing: a new message
        again = {
            "status": AlertStatus.OPEN.value,
            "created_at": now,  # when this incident opened: what a message in flight names
            "resolved_at": None,
            "acknowledged_at": None,
            "notified_at": None,
            "resolved_notified_at": None,
        }
    store.count_alert_again(connection, key, {**values, **again})


def resolve_alert(target: Engine | Connection, key: str) -> bool:
    """Resolve the open or acknowledged alert with this key (a later success of the same
    thing); False when there is none. Its "resolved" follow-up is then due."""
    key = stored_key(key)
    resolved = store.resolve_alert_by_key(target, key, utcnow())
    if resolved:
        log_event("alert.resolved", key=key)
    return resolved


def _short(value: str | None) -> str | None:
    return None if value is None else value[:255]
