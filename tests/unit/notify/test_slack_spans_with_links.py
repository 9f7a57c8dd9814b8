"""A digest line holding a dashboard link and two code spans fits Slack's 3,000 characters of
a text whole, its spans closed (service.notify.render's reason lines; slack_blocks.sections
cutting a longer line keeps its spans and links whole)."""

from __future__ import annotations

import re

from service.notify.digest_lines import Digest, ReasonLine, Totals
from service.notify.render import render_digest
from service.notify.slack_blocks import MAX_TEXT, sections
from service.notify.urls import DashboardLinks
from tests.unit.notify.test_render import LINKS, WINDOW
from tests.unit.notify.test_slack_code_spans import _mrkdwn

LONG = "k" * 2500 + " *bold* _it_"


def _outside_spans(text: str) -> str:
    return re.sub(r"`[^`]*`", "", text)


def test_a_reason_line_with_a_real_dashboard_link_keeps_its_spans_closed() -> None:
    """A reason and an example of 2,500 characters under a dashboard link of 226 (a public
    URL and twenty run ids, as the digest writes them): two spans of 1,400 and the link made
    3,030 characters; sections() cut the line at 3,000, inside the example's span, which
    never closed (3 backticks) and the `(1 row)` after it was lost."""
    runs = list(range(1000, 1020))
    links = DashboardLinks("https://meterfix.internal.example.com", WINDOW, runs=runs)
    url = links.quarantine(code="meter_event_customer_not_found")
    assert len(url) > 200
    digest = Digest(WINDOW, "UTC", True, Totals(1, 1, 0, 0, 1), Totals())
    digest.reasons = [ReasonLine("meter_event_customer_not_found", LONG, 1, LONG, url)]
    digest.links = LINKS
    texts = [t for t in _mrkdwn(render_digest(digest, now=WINDOW.end).slack) if "kkkk" in t]
    assert texts
    for text in texts:
        assert len(text) <= MAX_TEXT
        assert text.count("`") % 2 == 0, text[-80:]
        assert "*bold*" not in _outside_spans(text)
    line = next(t for t in texts if "`meter_event_customer_not_found`" in t)
    assert f"`meter_event_customer_not_found` (<{url}|rows>): `" in line
    assert "(1 row)\n    example: `kkk" in line and line.endswith("…`")


def test_a_line_cut_to_the_text_limit_ends_its_span_and_drops_a_cut_link() -> None:
    """A line longer than a text is cut at 3,000 characters: a code span it cuts is closed,
    and a link it would cut is left out whole (`<https://…` unclosed made the rest text)."""
    span = "`" + "v" * 3100 + "`"
    [block] = sections("", [span])
    text = block["text"]["text"]
    assert len(text) <= MAX_TEXT and text.count("`") == 2 and text.endswith("…`")
    link = "x" * 2990 + " <https://meterfix.example/quarantine?code=a|a>"
    [block] = sections("", [link])
    assert block["text"]["text"] == "x" * 2990 + " …"
