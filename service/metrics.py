"""GET /metrics: Prometheus text exposition of what the database knows (no extra dependency).

Counts come from the database, not process memory, so every web instance reports the same
numbers and a restart loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from flask import Blueprint, Response
from sqlalchemy import func, select
from sqlmodel import Session

from service.models import BucketObject, InboxEvent, QuarantinedRow, RemediationRun

bp = Blueprint("metrics", __name__)


def _family(name: str, help_text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    lines += [f"{name}{labels} {value:g}" for labels, value in samples]
    return lines


def _by_status(session: Session, column: Any, model: type) -> list[tuple[str, float]]:
    rows = session.execute(select(column, func.count()).select_from(model).group_by(column))
    return [(f'{{status="{status}"}}', float(cast(int, count))) for status, count in rows]


def render_metrics(session: Session) -> str:
    totals = session.execute(
        select(
            func.coalesce(func.sum(RemediationRun.input_rows), 0),
            func.coalesce(func.sum(RemediationRun.valid), 0),
            func.coalesce(func.sum(RemediationRun.corrected), 0),
            func.coalesce(func.sum(RemediationRun.quarantined), 0),
        )
    ).one()
    lines = _family(
        "meterfix_inbox_events",
        "Stored Stripe events by status.",
        _by_status(session, InboxEvent.status, InboxEvent),
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
    quarantined: int = session.execute(
        select(func.count()).select_from(QuarantinedRow)
    ).scalar_one()
    lines += _family(
        "meterfix_quarantined_rows", "Quarantined rows on record.", [("", float(quarantined))]
    )
    lines += _family(
        "meterfix_bucket_objects",
        "Bucket objects the poller has seen, by status.",
        _by_status(session, BucketObject.status, BucketObject),
    )
    return "\n".join(lines) + "\n"


@bp.get("/metrics")
def metrics() -> Response:
    from service.app import runtime

    with Session(runtime().engine) as session:
        body = render_metrics(session)
    return Response(body, mimetype="text/plain; version=0.0.4")
