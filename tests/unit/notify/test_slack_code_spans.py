"""A value in a Slack code span stays in it, however long: a span cut past its end shows
the rest of the value as mrkdwn."""

from __future__ import annotations

import re
from typing import Any

from service.notify.digest_lines import Digest, ReasonLine, Totals
from service.notify.render import AlertView, render_alert, render_digest
from tests.unit.notify.test_render import LINKS, WINDOW

LONG = "k" * 2500 + " *bold* _it_"


def _mrkdwn(body: Any) -> list[str]:
    if isinstance(body, dict):
        own = [body["text"]] if body.get("type") == "mrkdwn" else []
        return own + [t for v in body.values() for t in _mrkdwn(v)]
    if isinstance(body, list):
        return [t for v in body for t in _mrkdwn(v)]
    return []


def test_a_long_value_is_cut_inside_its_code_span() -> None:
    """A customer of 2,500 characters in an alert's field: the field (2,000 at most) was cut
    after its code span's start and before its end, so the span never closed."""
    alert = AlertView(
        subject="s",
        severity="critical",
        kind="remediation.run",
        status="open",
        count=1,
        meter=LONG,
        code=None,
        customer=LONG,
        rows=1,
        message=LONG + LONG,
        links=[("source", LONG, False)],
    )
    digest = Digest(WINDOW, "UTC", True, Totals(1, 1, 0, 0, 1), Totals())
    digest.reasons = [ReasonLine("no_meter", LONG, 1, LONG, "https://x/q")]
    digest.links = LINKS
    slack = render_alert(alert, resolved=False, alerts_url="u").slack
    texts = _mrkdwn(slack + render_digest(digest, now=WINDOW.end).slack)
    for text in texts:
        assert text.count("`") % 2 == 0, text[-80:]
        assert "*bold*" not in re.sub(r"`[^`]*`", "", text), text[-80:]
    assert sum("k" * 1000 in t for t in texts) >= 5
