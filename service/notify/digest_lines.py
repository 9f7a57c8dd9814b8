"""The digest of one window and its lines: what `service.notify.content` reads from the
database and `service.notify.render` writes into messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from service.notify.windows import Window


@dataclass
class Totals:
    """Runs and their rows summed: the new input's, or the quarantine re-runs' (rows tried
    again: received; quarantined again: quarantined)."""

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
    url: str | None  # its quarantined rows (none: a link to an empty list)


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
    kind: str = ""


@dataclass
class DeadLine:
    event_id: str
    event_type: str
    url: str


@dataclass
class ReportLine:
    """Error reports of one status (`unmatched`, `partial`) and meter, left in the window."""

    status: str
    meter: str | None  # None: `no_meter_found` reports
    reports: int
    failed: int  # records Stripe counted as failed in them
    codes: list[tuple[str, int]]  # the most failed first, at most `content.REPORT_CODES`
    more_codes: int = 0
    url: str = ""  # the dashboard's list of these reports


@dataclass
class ReportCount:
    reports: int = 0
    failed: int = 0
    lines: int = 0


@dataclass
class Digest:
    window: Window
    tz: str
    examples: bool
    totals: Totals  # new input: the runs finished in the window but quarantine re-runs
    previous: Totals  # the previous window's new input
    reruns: Totals = field(default_factory=Totals)  # the quarantine re-runs finished in it
    reruns_url: str = ""  # the rows they quarantined again
    waiting: int = 0  # rows waiting in quarantine when the digest was made
    waiting_url: str = ""
    codes: list[CodeLine] = field(default_factory=list)
    groups: list[GroupLine] = field(default_factory=list)
    # (groups, rows) beyond `content.TOP`: said, not left out unsaid
    groups_more: tuple[int, int] = (0, 0)
    reasons: list[ReasonLine] = field(default_factory=list)
    runs: list[RunLine] = field(default_factory=list)
    alerts: list[AlertLine] = field(default_factory=list)  # open critical ones, the latest
    alerts_total: int = 0  # every open critical alert (1,000 open were said to be 10)
    warnings: list[AlertLine] = field(default_factory=list)  # raised in the window, the latest
    warnings_total: int = 0
    dead: list[DeadLine] = field(default_factory=list)
    reports: list[ReportLine] = field(default_factory=list)
    reports_total: ReportCount = field(default_factory=ReportCount)
    reports_more: ReportCount = field(default_factory=ReportCount)  # beyond `content.REPORT_LINES`
    dead_total: int = 0
    backlog_events: int = 0
    oldest_pending: datetime | None = None
    backlog_objects: int = 0
    alerts_in_window: int = 0
    links: dict[str, str] = field(default_factory=dict)

    @property
    def alerts_more(self) -> int:
        return self.alerts_total - len(self.alerts)

    @property
    def warnings_more(self) -> int:
        return self.warnings_total - len(self.warnings)

    @property
    def empty(self) -> bool:
        """Nothing happened: no run finished (of new input or a re-run), no alert was raised
        and no error report was left unmatched or partial in the window."""
        nothing_left = self.reports_total.reports == 0
        no_run = self.totals.runs == 0 and self.reruns.runs == 0
        return no_run and self.alerts_in_window == 0 and nothing_left
