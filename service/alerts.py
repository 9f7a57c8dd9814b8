"""Alert records: one row per deterministic key, so re-processing raises nothing twice.

Digests and notifications read the `alerts` table; raising one here is all a job does.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine, insert, select, update

from service.logs import log_event
from service.models._types import utcnow
from service.models.alerts import Alert

ALERTS = Alert.__table__  # type: ignore[attr-defined]


def raise_alert(
    engine: Engine,
    *,
    key: str,
    severity: str,
    kind: str,
    subject: str,
    message: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Create the alert, or refresh it (due for notification again) when the key exists."""
    values = {
        "severity": severity,
        "kind": kind,
        "subject": subject,
        "message": message,
        "detail": detail or {},
        "notified_at": None,
    }
    with engine.begin() as connection:
        found = connection.execute(select(ALERTS.c.id).where(ALERTS.c.alert_key == key)).first()
        if found is None:
            connection.execute(insert(ALERTS).values(alert_key=key, created_at=utcnow(), **values))
        else:
            connection.execute(update(ALERTS).where(ALERTS.c.id == found[0]).values(**values))
    level = logging.ERROR if severity == "critical" else logging.WARNING
    log_event("alert.raised", level=level, key=key, kind=kind, subject=subject, reason=message)
