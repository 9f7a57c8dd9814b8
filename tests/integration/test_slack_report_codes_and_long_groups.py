# ruff: noqa: F811  (the fixture imported from the module that defines it)
"""Two leftovers of 141a95a in the Slack digest, checked on the exact JSON the local Slack
receiver got:

- the error-report line wrote Stripe's error codes as escaped mrkdwn, not code spans: a code
  `*bold*_it_~s~` was posted bold, italic and struck through;
- a group line of a long meter and customer (its dashboard link some 2,900 characters) was
  cut at Slack's 3,000 characters, and the cut dropped the link and the ": 9 rows" after it.

Failed before: the code '*bold*_it_~s~' outside a code span; no '9 rows' in the group line."""

from __future__ import annotations

from typing import Any

from service.adapters.slack import SlackChannel
from service.notify.digest_lines import Digest, GroupLine, ReportCount, ReportLine, Totals
from service.notify.render import render_digest
from service.notify.slack_blocks import MAX_TEXT
from service.notify.urls import DashboardLinks
from tests.integration.notify_helpers import SlackReceiver
from tests.integration.test_notify_slack import slack  # noqa: F401 (fixture)
from tests.unit.notify.test_render import LINKS, WINDOW

REPORTS = "https://x/runs?view=reports"
CODE = "*bold*_it_~s~ https://evil.example <!here>"  # a code of Stripe's report, kept as is


def _texts(bodies: list[dict[str, Any]], title: str) -> list[str]:
    blocks = [b for body in bodies for b in body["blocks"] if b["type"] == "section"]
    return [b["text"]["text"] for b in blocks if title in b.get("text", {}).get("text", "")]


def test_the_codes_of_an_error_report_line_are_code_spans(
    slack: tuple[SlackReceiver, str],
) -> None:
    receiver, url = slack
    digest = Digest(WINDOW, "UTC", True, Totals(1, 4, 0, 1, 3), Totals())
    digest.reports = [
        ReportLine("unmatched", "*meter*", 1, 5, [(CODE, 3), ("`tick`", 2)], 1, url=REPORTS)
    ]
    digest.reports_total = ReportCount(1, 5, 1)
    digest.links = dict(LINKS, reports=REPORTS)
    SlackChannel(url).send(render_digest(digest, now=WINDOW.end))

    [text] = _texts(receiver.bodies, "Stripe error reports not remediated")
    assert text.splitlines()[1] == (
        f"• <{REPORTS}|unmatched> / `*meter*`: 1 report, 5 failed records: "
        "`*bold*_it_~s~ https://evil.example &lt;!here&gt;` ×3, `ˋtickˋ` ×2, 1 more code"
    )


def test_a_group_line_too_long_for_its_link_keeps_its_row_count(
    slack: tuple[SlackReceiver, str],
) -> None:
    receiver, url = slack
    links = DashboardLinks("https://meterfix.internal.example.com", WINDOW)
    meter, customer = "é" * 255, "cus_" + "ü" * 200
    group_url = links.quarantine(code="no_meter", meter=meter, customer=customer)
    assert len(group_url) > 2800
    digest = Digest(WINDOW, "UTC", True, Totals(1, 9, 0, 0, 9), Totals())
    digest.groups = [
        GroupLine("no_meter", meter, customer, 9, group_url),
        GroupLine("no_meter", "api_requests", "cus_1", 2, "https://x/q?g=2"),
    ]
    digest.links = LINKS
    SlackChannel(url).send(render_digest(digest, now=WINDOW.end))

    [text] = _texts(receiver.bodies, "Quarantined by code")
    assert len(text) <= MAX_TEXT
    _title, long, short = text.splitlines()
    assert long == f"• `no_meter / {meter} / {customer}`: 9 rows"  # no link, no open span
    assert short == "• `no_meter / api_requests / cus_1`: 2 rows (<https://x/q?g=2|list>)"
