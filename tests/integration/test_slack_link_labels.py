"""A value from a row is never a Slack link's label. The digest wrote a code, a meter and a
customer as the label of their dashboard link (`<url|*bold*_x_~y~.csv>`): 82cab59 made every
text `verbatim` and put data in code spans, but a label cannot hold a code span, and Slack
formats mrkdwn in one (bold, italic, struck through). Now the value is a code span beside a
link whose label is our own text. Checked on the exact JSON the local Slack receiver got.
Failed before: the labels held the values."""

from __future__ import annotations

import re
from typing import Any

from service.adapters.slack import SlackChannel
from service.notify.digest_lines import CodeLine, Digest, GroupLine, ReasonLine, Totals
from service.notify.render import render_digest
from tests.integration.notify_helpers import SlackReceiver
from tests.integration.test_notify_slack import slack  # noqa: F401 (fixture)
from tests.unit.notify.test_render import LINKS, WINDOW

KEY = "*bold*_x_~y~.csv"  # a meter's event name as a usage file spelled it
CODE = "_not_*a*~code~"  # an error code of the file's own error_code column (kept unknown)
CUSTOMER = "cus_*VIP*"
Q = "https://x/quarantine"


def _section(bodies: list[dict[str, Any]], title: str) -> dict[str, Any]:
    blocks = [b for body in bodies for b in body["blocks"] if b["type"] == "section"]
    [section] = [b for b in blocks if title in b.get("text", {}).get("text", "")]
    return dict(section)


def _labels(text: str) -> list[str]:
    return re.findall(r"<[^|>]*\|([^>]*)>", text)


def test_data_in_a_digest_link_is_a_code_span_beside_a_fixed_label(
    slack: tuple[SlackReceiver, str],  # noqa: F811
) -> None:
    receiver, url = slack
    digest = Digest(WINDOW, "UTC", True, Totals(1, 4, 0, 1, 3), Totals())
    digest.codes = [CodeLine(CODE, 1, 2, 3, f"{Q}?code=1"), CodeLine(KEY, 0, 1, 1, None)]
    digest.groups = [GroupLine(CODE, KEY, CUSTOMER, 2, f"{Q}?group=1")]
    digest.reasons = [ReasonLine(KEY, "no meter named so", 1, None, f"{Q}?reason=1")]
    digest.links = LINKS
    SlackChannel(url).send(render_digest(digest, now=WINDOW.end))

    codes = _section(receiver.bodies, "By error code")
    assert codes == {
        "type": "section",
        "text": {
            "type": "mrkdwn",
            "text": "*By error code*\n"
            f"• `{CODE}` (<{Q}?code=1|rows>): 1 corrected, 2 quarantined (+3)\n"
            f"• `{KEY}`: 0 corrected, 1 quarantined (+1)",
            "verbatim": True,
        },
    }
    groups = _section(receiver.bodies, "Quarantined by code")
    assert groups["text"] == {
        "type": "mrkdwn",
        "text": "*Quarantined by code × meter × customer*\n"
        f"• `{CODE} / {KEY} / {CUSTOMER}`: 2 rows (<{Q}?group=1|list>)",
        "verbatim": True,
    }
    reasons = _section(receiver.bodies, "Top quarantine reasons")
    assert reasons["text"] == {
        "type": "mrkdwn",
        "text": "*Top quarantine reasons*\n"
        f"• `{KEY}` (<{Q}?reason=1|rows>): `no meter named so` (1 row)",
        "verbatim": True,
    }
    for body in receiver.bodies:
        for block in body["blocks"]:
            for text in [block.get("text", {}), *block.get("fields", [])]:
                for label in _labels(text.get("text", "")):
                    assert not set(label) & set("*_~`"), label
