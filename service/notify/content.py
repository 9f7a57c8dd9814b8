"""What a digest says about one window, read from the database.

Counts come from the runs that finished in the window (`remediation_runs`, whose per-code
tallies are kept per run) and from their quarantined rows (which carry meter and customer).
New input (every run but quarantine re-runs) is counted apart from the re-runs, whose input is
rows a run quarantined before: summed together, a row was counted once more per re-run that
quarantined it again, and read as new usage and new problems.
Corrections are counted per code only: the audit does not record a row's meter or customer.
With MFX_MESSAGE_EXAMPLES=off nothing taken from a row (customer, values, reason text that
may quote a value, example rows) is read into the digest at all.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from sqlalchemy import Connection, Engine

from remediation.outcomes import OTHER_CODES
from service.intake.store import count_events, latest_events, oldest_pending
from service.jobs.store.quarantine import (
    quarantine_group_totals,
    quarantine_groups,
    quarantine_reasons,
    quarantined_record,
)
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.jobs.store.reports_left import ReportsLeft, reports_left_between
from service.jobs.store.rerun_queue import count_quarantine
from service.jobs.store.run_counts import (
    FinishedRun,
    runs_finished_between,
    top_runs_finished_between,
)
from service.models import ErrorReportStatus
from service.models.alerts import AlertSeverity
from service.models.inbox import InboxStatus
from service.models.poller import ObjectStatus
from service.notify.digest_lines import (
    AlertLine,
    CodeLine,
    DeadLine,
    Digest,
    GroupLine,
    ReasonLine,
    ReportCount,
    ReportLine,
    RunLine,
    Totals,
)
from service.notify.store import (
    alerts_seen_between,
    count_alerts_seen_between,
    count_unresolved_critical_alerts,
    unresolved_critical_alerts,
)
from service.notify.urls import DashboardLinks
from service.notify.windows import Window
from service.poller.store import count_objects

TOP = 10
EXAMPLE_CHARS = 300
REPORT_LINES = 5  # status x meter lines of error reports; the rest summed in one line
REPORT_CODES = 5  # codes named on one of them
# The rows waiting in quarantine: neither taken by a re-run nor sent again since from a later
# version of their object; the quarantine page's `taken_again=no`, what a re-run of every row
# would take.
WAITING = QuarantineFilter(taken_again=False)


def collect_digest(
    engine: Engine, window: Window, *, public_url: str, examples: bool, tz: str = "UTC"
) -> Digest:
    # SQLite keeps times as naive UTC text: compare in UTC whatever DIGEST_TZ is.
    window = Window(window.start.astimezone(UTC), window.end.astimezone(UTC))
    with engine.connect() as conn:
        finished = runs_finished_between(conn, window.start, window.end)
        new_input = [run for run in finished if not run.rerun]
        links = DashboardLinks(public_url, window, runs=_quarantining_runs(new_input))
        totals, by_code = _totals(new_input)
        previous, previous_codes = _totals(_new_input(conn, window.previous))
        digest = Digest(window, tz, examples, totals, previous)
        _reruns(digest, [run for run in finished if run.rerun], links)
        digest.codes = _codes(by_code, previous_codes, links)
        digest.groups = _groups(conn, window, links, examples)
        digest.groups_more = _groups_more(conn, window, examples, digest.groups)
        digest.reasons = _reasons(conn, window, links, examples)
        digest.runs = _runs(conn, window, links)
        _reports(reports_left_between(conn, window.start, window.end), digest, links)
        _state(conn, window, digest, links)
    digest.links = {
        "dashboard": links.home(),
        "alerts": links.alerts(),
        "warnings": links.alerts(severity=AlertSeverity.WARNING),
        "dead_letters": links.dead_letters(),
        "quarantine": links.quarantine(),
        "reports": links.reports(),
    }
    return digest


def _quarantining_runs(new_input: list[FinishedRun]) -> list[int]:
    """The runs of new input that quarantined the rows the digest counts: the quarantine
    page's `run=` then opens exactly those rows (filtered by when rows were quarantined, a run
    started before the window was missed)."""
    return [run.id for run in new_input if run.quarantined]


def _new_input(conn: Connection, window: Window) -> list[FinishedRun]:
    return [run for run in runs_finished_between(conn, window.start, window.end) if not run.rerun]


def _totals(runs: list[FinishedRun]) -> tuple[Totals, dict[str, list[int]]]:
    totals = Totals()
    by_code: dict[str, list[int]] = {}
    for run in runs:
        totals.runs += 1
        totals.received += run.received
        totals.valid += run.valid
        totals.corrected += run.corrected
        totals.quarantined += run.quarantined
        codes: dict[str, Any] = run.by_code if isinstance(run.by_code, dict) else {}
        for code, slot in codes.items():
            tally = by_code.setdefault(str(code), [0, 0])
            tally[0] += int(slot.get("corrected", 0)) if isinstance(slot, dict) else 0
            tally[1] += int(slot.get("quarantined", 0)) if isinstance(slot, dict) else 0
    return totals, by_code


def _reruns(digest: Digest, reruns: list[FinishedRun], links: DashboardLinks) -> None:
    """The quarantine re-runs finished in the window, apart from new input: rows tried again
    and what became of them, linked to the rows they quarantined again."""
    digest.reruns, _ = _totals(reruns)
    digest.reruns_url = links.of_reruns([run.id for run in reruns]).quarantine()


def _codes(
    now: dict[str, list[int]], before: dict[str, list[int]], links: DashboardLinks
) -> list[CodeLine]:
    lines = [
        CodeLine(
            code=code,
            corrected=corrected,
            quarantined=quarantined,
            change=corrected + quarantined - sum(before.get(code, [0, 0])),
            # the codes a run did not name: the window's quarantined rows, all codes
            url=links.quarantine(code=None if code == OTHER_CODES else code)
            if quarantined
            else None,
        )
        for code, (corrected, quarantined) in now.items()
        if corrected or quarantined
    ]
    return sorted(lines, key=lambda c: (-(c.corrected + c.quarantined), c.code))


def _groups(
    conn: Connection, window: Window, links: DashboardLinks, examples: bool
) -> list[GroupLine]:
    groups = quarantine_groups(conn, window.start, window.end, customers=examples, limit=TOP)
    return [
        GroupLine(
            code, meter, customer, rows, links.quarantine(code=code, meter=meter, customer=customer)
        )
        for code, meter, customer, rows in groups
    ]


def _groups_more(
    conn: Connection, window: Window, examples: bool, shown: list[GroupLine]
) -> tuple[int, int]:
    """The groups and rows past the `TOP` shown: a digest of 23 quarantined rows listed 10
    groups of 18 and said nothing of the rest (a `timestamp_too_far_in_past` group among
    them)."""
    if len(shown) < TOP:
        return 0, 0
    groups, rows = quarantine_group_totals(conn, window.start, window.end, customers=examples)
    return groups - len(shown), rows - sum(g.rows for g in shown)


def _reasons(
    conn: Connection, window: Window, links: DashboardLinks, examples: bool
) -> list[ReasonLine]:
    lines = []
    for code, reason, rows, first in quarantine_reasons(
        conn, window.start, window.end, reasons=examples, limit=5
    ):
        example = _example(conn, first) if examples else None
        lines.append(ReasonLine(code, reason, rows, example, links.quarantine(code=code)))
    return lines


def _example(conn: Connection, row_id: int) -> str | None:
    record = quarantined_record(conn, row_id)
    if not record:
        return None
    text = json.dumps(record, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"


def _runs(conn: Connection, window: Window, links: DashboardLinks) -> list[RunLine]:
    return [
        RunLine(
            r["id"],
            r["trigger"],
            r["source"],
            r["input_rows"],
            r["valid"],
            r["corrected"],
            r["quarantined"],
            links.run(r["id"]),
        )
        for r in top_runs_finished_between(conn, window.start, window.end, TOP)
    ]


def _reports(left: list[ReportsLeft], digest: Digest, links: DashboardLinks) -> None:
    """Unmatched first (nothing of them was remediated), then the most failed records."""
    ordered = sorted(
        left,
        key=lambda r: (
            r.status != ErrorReportStatus.UNMATCHED,
            -r.failed,
            r.meter_id is None,
            r.meter_id or "",
        ),
    )
    lines = [_report_line(found, links) for found in ordered]
    digest.reports = lines[:REPORT_LINES]
    digest.reports_total = _count(lines)
    digest.reports_more = _count(lines[REPORT_LINES:])


def _report_line(found: ReportsLeft, links: DashboardLinks) -> ReportLine:
    codes = sorted(found.codes.items(), key=lambda item: (-item[1], item[0]))
    return ReportLine(
        found.status,
        found.meter_id,
        found.reports,
        found.failed,
        codes[:REPORT_CODES],
        more_codes=max(len(codes) - REPORT_CODES, 0),
        url=links.reports_of(found.status, found.meter_id),
    )


def _count(lines: list[ReportLine]) -> ReportCount:
    return ReportCount(sum(r.reports for r in lines), sum(r.failed for r in lines), len(lines))


def _state(conn: Connection, window: Window, digest: Digest, links: DashboardLinks) -> None:
    """Rows waiting in quarantine, open critical alerts, dead letters and backlog: the state
    at the end of the window (read when the digest is made)."""
    digest.waiting = count_quarantine(conn, WAITING)
    digest.waiting_url = links.quarantine_now(**WAITING.as_query())
    for subject, status, count in unresolved_critical_alerts(conn, TOP):
        digest.alerts.append(AlertLine(subject, status, count, links.alerts()))
    digest.alerts_total = count_unresolved_critical_alerts(conn)
    digest.alerts_in_window = count_alerts_seen_between(conn, window.start, window.end)
    _warnings(conn, window, digest, links)
    digest.dead_total = count_events(conn, InboxStatus.DEAD)
    for row in latest_events(conn, InboxStatus.DEAD, 5):
        digest.dead.append(
            DeadLine(str(row["event_id"]), str(row["event_type"]), links.dead_letters())
        )
    digest.backlog_events = count_events(conn, InboxStatus.PENDING)
    digest.oldest_pending = oldest_pending(conn)
    digest.backlog_objects = count_objects(conn, ObjectStatus.SEEN)


def _warnings(conn: Connection, window: Window, digest: Digest, links: DashboardLinks) -> None:
    """The warning alerts raised in the window: a window whose only news they were sent a
    digest saying nothing of them (`digest.failed`, `poller.taken_again` reached no one)."""
    warning = AlertSeverity.WARNING
    url = links.alerts(severity=warning)
    for kind, subject, status, count in alerts_seen_between(
        conn, window.start, window.end, warning, TOP
    ):
        digest.warnings.append(AlertLine(subject, status, count, url, kind))
    digest.warnings_total = count_alerts_seen_between(conn, window.start, window.end, warning)
