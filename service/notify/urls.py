"""Dashboard links in messages, under MFX_PUBLIC_URL (the web pages use these paths)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from service.jobs.store.reports_left import UNREMEDIATED
from service.notify.windows import Window

MAX_LINK_RUNS = 20  # runs a link names (`run=3,7,…`): beyond them, the window's rows


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _last_moment_before(moment: datetime) -> str:
    """`until` is inclusive: the window's end less a microsecond (the database's precision),
    so a row quarantined at the end is the next window's only."""
    return (moment - timedelta(microseconds=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DashboardLinks:
    def __init__(
        self,
        public_url: str,
        window: Window | None = None,
        *,
        runs: Sequence[int] = (),
        reruns: bool = False,
    ) -> None:
        """With a window, quarantine links show the rows a digest counts: those of the runs
        finished in it. With `runs`, the runs that quarantined rows in the window, that is
        exactly `run=`; beyond `MAX_LINK_RUNS` of them (or with none) the links fall back to
        the rows quarantined in the window (`since`, `until`) by new input (`rerun=no`), or
        with `reruns` by quarantine re-runs (`rerun=yes`): the digest counts them apart. The
        window's rows may still differ: a run started before the window is left out, one
        finishing after it is in."""
        self.base = public_url.rstrip("/")
        self.window = window
        self.period: dict[str, str] = {}
        if runs and len(runs) <= MAX_LINK_RUNS:
            self.period = {"run": ",".join(str(run) for run in sorted(runs))}
        elif window is not None:
            self.period = {"since": _iso(window.start), "until": _last_moment_before(window.end)}
            self.period["rerun"] = "yes" if reruns else "no"

    def of_reruns(self, runs: Sequence[int]) -> DashboardLinks:
        """The links of the same window naming these quarantine re-runs (a digest's)."""
        return DashboardLinks(self.base, self.window, runs=runs, reruns=True)

    def home(self) -> str:
        return f"{self.base}/"

    def run(self, run_id: int) -> str:
        return f"{self.base}/runs/{run_id}"

    def quarantine(self, **filters: object) -> str:
        chosen = {k: v for k, v in filters.items() if v not in (None, "")}
        query = urlencode(chosen | self.period)
        return f"{self.base}/quarantine" + (f"?{query}" if query else "")

    def quarantine_now(self, **filters: str) -> str:
        """The quarantine page as it is, whatever the window (the rows waiting now)."""
        return f"{self.base}/quarantine" + (f"?{urlencode(filters)}" if filters else "")

    def reports(self) -> str:
        """The error reports a digest counts: left unmatched or partial in the window."""
        return self._reports({"status": ",".join(UNREMEDIATED)})

    def reports_of(self, status: str, meter: str | None) -> str:
        """The window's reports of one status and meter (None: the reports without one)."""
        of_meter = {"no_meter": "yes"} if meter is None else {"meter": meter}
        return self._reports({"status": status} | of_meter)

    def _reports(self, filters: dict[str, str]) -> str:
        """The error reports page; with a window, the reports left in it (`since` its start,
        `until` the last microsecond before its end), dated as the digest dates them: when
        recorded, a partial one when its task last found it short (`left_at`)."""
        query = {"view": "reports"} | filters
        if self.window is not None:
            query |= {"since": _iso(self.window.start)}
            query |= {"until": _last_moment_before(self.window.end)}
        return f"{self.base}/runs?{urlencode(query)}"

    def alerts(self, severity: str | None = None) -> str:
        return f"{self.base}/alerts" + (f"?{urlencode({'severity': severity})}" if severity else "")

    def dead_letters(self) -> str:
        return f"{self.base}/events?status=dead"
