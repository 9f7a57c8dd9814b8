"""Dashboard links in messages, under MFX_PUBLIC_URL (the web pages use these paths)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from service.notify.windows import Window


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DashboardLinks:
    def __init__(self, public_url: str, window: Window | None = None) -> None:
        """With a window, quarantine links show that window's rows (`since`/`until`)."""
        self.base = public_url.rstrip("/")
        self.period = (
            {} if window is None else {"since": _iso(window.start), "until": _iso(window.end)}
        )

    def home(self) -> str:
        return f"{self.base}/"

    def run(self, run_id: int) -> str:
        return f"{self.base}/runs/{run_id}"

    def quarantine(self, **filters: object) -> str:
        chosen = {k: v for k, v in filters.items() if v not in (None, "")}
        query = urlencode(chosen | self.period)
        return f"{self.base}/quarantine" + (f"?{query}" if query else "")

    def alerts(self) -> str:
        return f"{self.base}/alerts"

    def dead_letters(self) -> str:
        return f"{self.base}/events?status=dead"
