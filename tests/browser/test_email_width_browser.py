"""The HTML part of a digest and of a critical alert, as headless Chromium draws it in a
mail client's 800 px: a long value without spaces (an object key, a customer id, a reason
quoting a row) wraps inside its cell instead of widening the email past the screen."""

from __future__ import annotations

from typing import Any

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
from service.notify.render import AlertView, render_alert, render_digest
from tests.unit.notify.test_render import LINKS, WINDOW

LONG = "usage/" + "k" * 600 + ".csv"  # no space, no hyphen: nowhere a line breaks by itself
VIEWPORT = {"width": 800, "height": 900}


def _digest() -> Digest:
    d = Digest(WINDOW, "UTC", True, Totals(1, 9, 1, 4, 4), Totals())
    d.codes = [CodeLine("c" * 300, 1, 2, 3, "https://x/q")]
    d.groups = [GroupLine("no_meter", "m" * 300, "cus_" + "c" * 300, 2, "https://x/q")]
    d.reasons = [ReasonLine("no_meter", "r" * 600, 3, "e" * 600, "https://x/q")]
    d.runs = [RunLine(1, "poller", LONG, 9, 1, 4, 4, "https://x/runs/1")]
    d.alerts = [AlertLine(f"{LONG}: the poller gave up", "open", 1, "https://x/a")]
    d.warnings = [AlertLine(f"{LONG}: quarantined", "open", 1, "https://x/a", "run")]
    d.alerts_total, d.warnings_total = 1, 1
    d.dead, d.dead_total = [DeadLine("evt_" + "d" * 300, "v1.billing", "https://x/e")], 1
    d.reports = [ReportLine("unmatched", "m" * 300, 1, 2, [("x" * 300, 2)], 0, "https://x/r")]
    d.reports_total = ReportCount(1, 2, 1)
    d.links = LINKS | {"reports": "https://x/reports"}
    return d


def _alert() -> AlertView:
    return AlertView(
        subject=f"{LONG}: import failing for 6 h; the poller gave up",
        severity="critical",
        kind="poller.gave_up",
        status="open",
        count=1,
        meter="m" * 300,
        code="c" * 300,
        customer="cus_" + "c" * 300,
        rows=3,
        message=f"source {LONG} failed",
        links=[("objects", LONG, False), ("run", "https://x/runs/" + "9" * 300, True)],
    )


def _width(browser: Any, html: str) -> int:
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.set_content(html)
        return int(page.evaluate("document.documentElement.scrollWidth"))
    finally:
        context.close()


def test_a_long_value_wraps_inside_the_digest_email(browser: Any) -> None:
    """README: digests "write values the same way" as the dashboard, where "a long value
    without spaces wraps inside its cell". The digest's HTML had no `overflow-wrap` on its
    cells: a 600-character key made the email 6358 px wide at 800 px."""
    html = render_digest(_digest(), now=WINDOW.end).html
    assert LONG in html
    assert _width(browser, html) <= VIEWPORT["width"]


def test_a_long_value_wraps_inside_the_alert_email(browser: Any) -> None:
    """The critical alert's HTML: its headline, subject, fact cells and links alike."""
    html = render_alert(_alert(), resolved=False, alerts_url="https://x/alerts").html
    assert LONG in html
    assert _width(browser, html) <= VIEWPORT["width"]
