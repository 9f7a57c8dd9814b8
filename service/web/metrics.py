"""GET /metrics: Prometheus text exposition of what the database knows (no extra dependency).

Counts come from the database, not process memory, so every web instance reports the same
numbers and a restart loses nothing. Heartbeat ages are `+Inf` while no process of that
role ever beat, so `age > MFX_HEARTBEAT_SILENCE` alerts fire for a worker that never started.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Blueprint, Response
from sqlalchemy import Connection

from service.intake.store import events_by_status
from service.jobs.store.quarantine import count_all_quarantined
from service.jobs.store.run_counts import run_totals
from service.models.alerts import AlertSeverity, AlertStatus
from service.notify.store import alert_counts
from service.poller.store import objects_by_status
from service.web.context import engine
from service.worker.heartbeats import HealthSnapshot, health_snapshot

bp = Blueprint("metrics", __name__)


def _family(name: str, help_text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    lines += [f"{name}{labels} {_number(value)}" for labels, value in samples]
    return lines


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"  # Prometheus spells infinity this way, not Python's "inf"
    if value.is_integer():
        return str(int(value))  # a count exactly: `{value:g}` wrote 1,234,567 as 1.23457e+06
    return repr(value)


def _by_status(counts: Iterable[tuple[str, int]]) -> list[tuple[str, float]]:
    return [(f'{{status="{status}"}}', float(count)) for status, count in counts]


def render_metrics(connection: Connection) -> str:
    totals = run_totals(connection)
    lines = _family(
        "meterfix_inbox_events",
        "Stored Stripe events by status.",
        _by_status(events_by_status(connection)),
    )
    lines += _family(
        "meterfix_remediation_rows",
        "Rows seen by remediation runs, by outcome.",
        [
            ('{outcome="input"}', float(totals[0])),
            ('{outcome="valid"}', float(totals[1])),
            ('{outcome="corrected"}', float(totals[2])),
            ('{outcome="quarantined"}', float(totals[3])),
        ],
    )
    quarantined = count_all_quarantined(connection)
    lines += _family(
        "meterfix_quarantined_rows", "Quarantined rows on record.", [("", float(quarantined))]
    )
    lines += _family(
        "meterfix_bucket_objects",
        "Bucket objects the poller has seen, by status.",
        _by_status(objects_by_status(connection)),
    )
    lines += _liveness(health_snapshot(connection))
    lines += _family(
        "meterfix_alerts", "Alerts by severity and status.", _alerts_by_severity(connection)
    )
    return "\n".join(lines) + "\n"


def _liveness(snapshot: HealthSnapshot) -> list[str]:
    def age(value: float | None) -> list[tuple[str, float]]:
        return [("", float("inf") if value is None else value)]

    lines = _family(
        "meterfix_worker_heartbeat_age_seconds",
        "Seconds since the newest worker heartbeat (+Inf: none ever).",
        age(snapshot.worker_heartbeat_age_seconds),
    )
    lines += _family(
        "meterfix_poller_heartbeat_age_seconds",
        "Seconds since the newest poller heartbeat (+Inf: none ever).",
        age(snapshot.poller_heartbeat_age_seconds),
    )
    lines += _family(
        "meterfix_backlog_items",
        "Inbox items not finished yet (pending or processing).",
        [("", float(snapshot.backlog_items))],
    )
    lines += _family(
        "meterfix_oldest_pending_age_seconds",
        "Age of the oldest unfinished inbox item (0 when none).",
        [("", snapshot.oldest_pending_age_seconds or 0.0)],
    )
    return lines


def _alerts_by_severity(connection: Connection) -> list[tuple[str, float]]:
    """Every severity x status pair (closed sets), zeros included, so series never vanish."""
    counts = alert_counts(connection)
    return [
        (f'{{severity="{sev}",status="{st}"}}', float(counts.get((sev.value, st.value), 0)))
        for sev in AlertSeverity
        for st in AlertStatus
    ]


@bp.get("/metrics")
def metrics() -> Response:
    with engine().connect() as connection:
        body = render_metrics(connection)
    return Response(body, mimetype="text/plain; version=0.0.4")
