"""Rendering: Slack's limits, and no row contents when examples are off."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from service.notify.digest_lines import Digest, GroupLine, ReasonLine, Totals
from service.notify.render import AlertView, render_alert, render_digest
from service.notify.slack_blocks import MAX_BLOCKS, MAX_TEXT, sections, split_blocks
from service.notify.windows import Window

WINDOW = Window(datetime(2026, 11, 29, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC))
LINKS = {
    "dashboard": "https://x/",
    "alerts": "https://x/alerts",
    "warnings": "https://x/alerts?severity=warning",
    "dead_letters": "https://x/d",
}


def _digest(groups: int) -> Digest:
    digest = Digest(WINDOW, "UTC", True, Totals(1, 9, 1, 4, 4), Totals())
    digest.groups = [
        GroupLine("no_meter", f"meter_{n}_" + "m" * 60, f"cus_{n}", n, f"https://x/q?{n}")
        for n in range(groups)
    ]
    digest.reasons = [ReasonLine("no_meter", "x" * 500, 3, '{"v": "<b>"}', "https://x/q")]
    digest.links = LINKS
    return digest


def test_a_long_digest_is_split_at_slack_limits() -> None:
    message = render_digest(_digest(2000), now=WINDOW.end)
    assert len(message.slack) > 1
    for payload in message.slack:
        assert len(payload["blocks"]) <= MAX_BLOCKS and len(payload["text"]) <= MAX_TEXT
        for block in payload["blocks"]:
            text = block.get("text", {}).get("text", "")
            assert len(text) <= MAX_TEXT
            if block["type"] == "header":
                assert len(text) <= 150
    blocks = [b for p in message.slack for b in p["blocks"]]
    assert blocks[0]["type"] == "header" and blocks[-1]["type"] == "actions"
    assert "&lt;b&gt;" in json.dumps(blocks)  # mrkdwn control characters escaped


def test_sections_and_split() -> None:
    assert sections("t", []) == []
    blocks = sections("*t*", ["a" * 2000, "b" * 2000, "c"])
    assert [len(b["text"]["text"]) for b in blocks] == [2004, 2002]
    assert [len(m["blocks"]) for m in split_blocks([{"type": "divider"}] * 120, "x")] == [
        50,
        50,
        20,
    ]


def test_an_alert_without_examples_has_no_customer_or_free_text() -> None:
    row = {
        "subject": "run #3: 5 rows quarantined",
        "severity": "critical",
        "kind": "remediation.run",
        "status": "open",
        "count": 2,
        "meter": "api",
        "code": "no_meter",
        "customer": "cus_Hidden",
        "rows": 5,
        "message": "value 123456 for cus_Hidden",
        "links": {"run": 3, "objects": ["k"]},
    }
    view = AlertView.of(row, examples=False, run_url=lambda n: f"https://x/runs/{n}")
    message = render_alert(view, resolved=False, alerts_url="https://x/alerts")
    for text in (message.text, message.html, json.dumps(message.slack)):
        assert "cus_Hidden" not in text and "123456" not in text
        assert "https://x/runs/3" in text and "no_meter" in text
    assert message.subject == "[meterfix] CRITICAL: run #3: 5 rows quarantined"
    shown = AlertView.of(row, examples=True, run_url=str)
    assert "cus_Hidden" in render_alert(shown, resolved=True, alerts_url="u").text
