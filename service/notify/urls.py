"""Dashboard links in messages, under MFX_PUBLIC_URL (the web pages use these paths)."""

from __future__ import annotations

from urllib.parse import urlencode


class DashboardLinks:
    def __init__(self, public_url: str) -> None:
        self.base = public_url.rstrip("/")

    def home(self) -> str:
        return f"{self.base}/"

    def run(self, run_id: int) -> str:
        return f"{self.base}/runs/{run_id}"

    def quarantine(self, **filters: object) -> str:
        query = urlencode({k: v for k, v in filters.items() if v not in (None, "")})
        return f"{self.base}/quarantine" + (f"?{query}" if query else "")

    def alerts(self) -> str:
        return f"{self.base}/alerts"

    def dead_letters(self) -> str:
        return f"{self.base}/events?status=dead"
