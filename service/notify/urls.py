"""Dashboard links in messages, under MFX_PUBLIC_URL (the web pages use these paths)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

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
        self, public_url: str, window: Window | None = None, *, runs: Sequence[int] = ()
    ) -> None:
        """With a window, quarantine links show the rows a digest counts: those of the runs
        finished in it. With `runs`, the runs that quarantined rows in the window, that is
        exactly `run=`; beyond `MAX_LINK_RUNS` of them (or with none) the links fall back to
        the rows quarantined in the window (`since`, `until`), which may differ: a run started
        before the window is left out, one finishing after it is in."""
        self.base = public_url.rstrip("/")
        self.period: dict[str, str] = {}
        if runs and len(runs) <= MAX_LINK_RUNS:
            self.period = {"run": ",".join(str(run) for run in sorted(runs))}
        elif window is not None:
            self.period = {"since": _iso(window.start), "until": _last_moment_before(window.end)}

    def home(self) -> str:
        return f"{self.base}/"

    def run(self, run_id: int) -> str:
        return f"{self.base}/runs/{run_id}"

    def quarantine(self, **filters: object) -> str:
        chosen = {k: v for k, v in filters.items() if v not in (None, "")}
        query = urlencode(chosen | self.period)
        return f"{self.base}/quarantine" + (f"?{query}" if query else "")

    def reports(self) -> str:
        """The error reports page (its status column tells unmatched and partial apart)."""
        return f"{self.base}/runs?view=reports"

    def alerts(self) -> str:
        return f"{self.base}/alerts"

    def dead_letters(self) -> str:
        return f"{self.base}/events?status=dead"
