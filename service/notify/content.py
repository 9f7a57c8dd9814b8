"""What a digest says about one window, read from the database.

Counts come from the runs that finished in the window (`remediation_runs`, whose per-code
tallies are kept per run) and from their quarantined rows (which carry meter and customer).
Corrections are counted per code only: the audit does not record a row's meter or customer.
With MFX_MESSAGE_EXAMPLES=off nothing taken from a row (customer, values, reason text that
may quote a value, example rows) is read into the digest at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, select

from service.models import QuarantinedRow, RemediationRun, RunStatus
from service.models._types import as_utc, table_of
from service.models.alerts import Alert, AlertSeverity, AlertStatus
from service.models.inbox import InboxEvent, InboxStatus
from service.models.poller import BucketObject, ObjectStatus
from service.notify.urls import DashboardLinks
from service.notify.windows import Window

RUNS = table_of(RemediationRun)
QUARANTINE = table_of(QuarantinedRow)
ALERTS = table_of(Alert)
INBOX = table_of(InboxEvent)
OBJECTS = table_of(BucketObject)
TOP = 10
EXAMPLE_CHARS = 300


@dataclass
class Totals:
    runs: int = 0
    received: int = 0
    valid: int = 0
    corrected: int = 0
    quarantined: int = 0


@dataclass
class CodeLine:
    code: str
    corrected: int
    quarantined: int
    change: int  # corrected + quarantined against the previous window
    url: str


@dataclass
class GroupLine:
    code: str
    meter: str | None
    customer: str | None  # None when examples are off
    rows: int
    url: str


@dataclass
class ReasonLine:
    code: str
    reason: str | None  # None when examples are off (a reason may quote a value)
    rows: int
    example: str | None
    url: str


@dataclass
class RunLine:
    run_id: int
    trigger: str
    source: str
    received: int
    valid: int
    corrected: int
    quarantined: int
    url: str


@dataclass
class AlertLine:
    subject: str
    status: str
    count: int
    url: str


@dataclass
class DeadLine:
    event_id: str
    event_type: str
    url: str


@dataclass
class Digest:
    window: Window
    tz: str
    examples: bool
    totals: Totals
    previous: Totals
    codes: list[CodeLine] = field(default_factory=list)
    groups: list[GroupLine] = field(default_factory=list)
    reasons: list[ReasonLine] = field(default_factory=list)
    runs: list[RunLine] = field(default_factory=list)
    alerts: list[AlertLine] = field(default_factory=list)
    dead: list[DeadLine] = field(default_factory=list)
    dead_total: int = 0
    backlog_events: int = 0
    oldest_pending: datetime | None = None
    backlog_objects: int = 0
    alerts_in_window: int = 0
    links: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Nothing happened: no run finished and no alert was raised in the window."""
        return self.totals.runs == 0 and self.alerts_in_window == 0


def collect_digest(
    engine: Engine, window: Window, *, public_url: str, examples: bool, tz: str = "UTC"
) -> Digest:
    # SQLite keeps times as naive UTC text: compare in UTC whatever DIGEST_TZ is.
    window = Window(window.start.astimezone(UTC), window.end.astimezone(UTC))
    links = DashboardLinks(public_url, window)
    with engine.connect() as conn:
        totals, by_code = _totals(conn, window)
        previous, previous_codes = _totals(conn, window.previous)
        digest = Digest(window, tz, examples, totals, previous)
        digest.codes = _codes(by_code, previous_codes, links)
        digest.groups = _groups(conn, window, links, examples)
        digest.reasons = _reasons(conn, window, links, examples)
        digest.runs = _runs(conn, window, links)
        _state(conn, window, digest, links)
    digest.links = {
        "dashboard": links.home(),
        "alerts": links.alerts(),
        "dead_letters": links.dead_letters(),
        "quarantine": links.quarantine(),
    }
    return digest


def _in_window(window: Window) -> Any:
    return (
        (RUNS.c.status == RunStatus.DONE)
        & (RUNS.c.finished_at >= window.start)
        & (RUNS.c.finished_at < window.end)
    )


def _totals(conn: Connection, window: Window) -> tuple[Totals, dict[str, list[int]]]:
    totals = Totals()
    by_code: dict[str, list[int]] = {}
    columns = (RUNS.c.input_rows, RUNS.c.valid, RUNS.c.corrected, RUNS.c.quarantined)
    for row in conn.execute(select(*columns, RUNS.c.by_code).where(_in_window(window))):
        totals.runs += 1
        totals.received += int(row[0])
        totals.valid += int(row[1])
        totals.corrected += int(row[2])
        totals.quarantined += int(row[3])
        codes: dict[str, Any] = row[4] if isinstance(row[4], dict) else {}
        for code, slot in codes.items():
            tally = by_code.setdefault(str(code), [0, 0])
            tally[0] += int(slot.get("corrected", 0)) if isinstance(slot, dict) else 0
            tally[1] += int(slot.get("quarantined", 0)) if isinstance(slot, dict) else 0
    return totals, by_code


def _codes(
    now: dict[str, list[int]], before: dict[str, list[int]], links: DashboardLinks
) -> list[CodeLine]:
    lines = [
        CodeLine(
            code=code,
            corrected=corrected,
            quarantined=quarantined,
            change=corrected + quarantined - sum(before.get(code, [0, 0])),
            url=links.quarantine(code=code),
        )
        for code, (corrected, quarantined) in now.items()
        if corrected or quarantined
    ]
    return sorted(lines, key=lambda c: (-(c.corrected + c.quarantined), c.code))


def _window_quarantine(window: Window) -> Any:
    return QUARANTINE.c.run_id.in_(select(RUNS.c.id).where(_in_window(window)))


def _groups(
    conn: Connection, window: Window, links: DashboardLinks, examples: bool
) -> list[GroupLine]:
    keys = [QUARANTINE.c.code, QUARANTINE.c.meter] + ([QUARANTINE.c.customer] if examples else [])
    rows = func.count().label("rows")
    statement = (
        select(*keys, rows)
        .where(_window_quarantine(window))
        .group_by(*keys)
        .order_by(rows.desc(), *keys)
        .limit(TOP)
    )
    lines = []
    for row in conn.execute(statement):
        customer = row[2] if examples else None
        url = links.quarantine(code=row[0], meter=row[1], customer=customer)
        lines.append(GroupLine(row[0], row[1], customer, int(row.rows), url))
    return lines


def _reasons(
    conn: Connection, window: Window, links: DashboardLinks, examples: bool
) -> list[ReasonLine]:
    keys = [QUARANTINE.c.code] + ([QUARANTINE.c.reason] if examples else [])
    rows = func.count().label("rows")
    first = func.min(QUARANTINE.c.id).label("first")
    statement = (
        select(*keys, rows, first)
        .where(_window_quarantine(window))
        .group_by(*keys)
        .order_by(rows.desc(), *keys)
        .limit(5)
    )
    lines = []
    for row in conn.execute(statement):
        example = _example(conn, int(row.first)) if examples else None
        reason = str(row[1]) if examples else None
        lines.append(
            ReasonLine(row[0], reason, int(row.rows), example, links.quarantine(code=row[0]))
        )
    return lines


def _example(conn: Connection, row_id: int) -> str | None:
    record = conn.execute(select(QUARANTINE.c.record).where(QUARANTINE.c.id == row_id)).scalar()
    if not record:
        return None
    text = json.dumps(record, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"


def _runs(conn: Connection, window: Window, links: DashboardLinks) -> list[RunLine]:
    statement = (
        select(RUNS)
        .where(_in_window(window))
        .order_by(RUNS.c.quarantined.desc(), RUNS.c.finished_at.desc())
        .limit(TOP)
    )
    return [
        RunLine(
            r.id,
            r.trigger,
            r.source,
            r.input_rows,
            r.valid,
            r.corrected,
            r.quarantined,
            links.run(r.id),
        )
        for r in conn.execute(statement)
    ]


def _state(conn: Connection, window: Window, digest: Digest, links: DashboardLinks) -> None:
    """Open critical alerts, dead letters and backlog: the state at the end of the window."""
    open_critical = (ALERTS.c.severity == AlertSeverity.CRITICAL) & (
        ALERTS.c.status != AlertStatus.RESOLVED
    )
    for row in conn.execute(
        select(ALERTS.c.subject, ALERTS.c.status, ALERTS.c.count)
        .where(open_critical)
        .order_by(ALERTS.c.last_seen_at.desc())
        .limit(TOP)
    ):
        digest.alerts.append(AlertLine(str(row[0]), str(row[1]), int(row[2]), links.alerts()))
    digest.alerts_in_window = _count(
        conn, ALERTS, (ALERTS.c.last_seen_at >= window.start) & (ALERTS.c.last_seen_at < window.end)
    )
    dead = INBOX.c.status == InboxStatus.DEAD
    digest.dead_total = _count(conn, INBOX, dead)
    for row in conn.execute(
        select(INBOX.c.event_id, INBOX.c.event_type)
        .where(dead)
        .order_by(INBOX.c.id.desc())
        .limit(5)
    ):
        digest.dead.append(DeadLine(str(row[0]), str(row[1]), links.dead_letters()))
    pending = INBOX.c.status == InboxStatus.PENDING
    digest.backlog_events = _count(conn, INBOX, pending)
    oldest = conn.execute(select(func.min(INBOX.c.received_at)).where(pending)).scalar()
    digest.oldest_pending = as_utc(oldest)
    digest.backlog_objects = _count(conn, OBJECTS, OBJECTS.c.status == ObjectStatus.SEEN)


def _count(conn: Connection, table: Table, where: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table).where(where)).scalar() or 0)
