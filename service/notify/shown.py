"""Text from a usage file or a Stripe event as we write it for people (the dashboard's pages,
the digests and alerts): characters a reader's screen obeys or hides instead of drawing are
written as their code point, `[U+202E]`, so what is shown is what the value holds."""

from __future__ import annotations

import re
from typing import Any

from markupsafe import Markup

# Bidi controls (U+202E draws `report-\u202evsc.exe` as `report-exe.csv`, an executable shown
# as a CSV file), and control characters other than tab and line breaks, C1 ones too (U+009B
# starts a terminal's escape sequence where a plain-text email is read in one).
_UNSEEN = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f"
_UNSEEN_ON_A_PAGE = re.compile(f"[{_UNSEEN}]")
# A line break in a value of a line of text (an email's plain text, a Slack message) starts
# a line of its own, that the value writes: `in/a.csv\nAlerts: https://…` under ours.
_UNSEEN_IN_A_LINE = re.compile(f"[{_UNSEEN}\n\r\x85\u2028\u2029]")


def counted(count: int, noun: str) -> str:
    """`1 row`, `2 rows`: a count of things for people (messages, pages)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _code_point(found: re.Match[str]) -> str:
    return f"[U+{ord(found.group()):04X}]"


def shown_as_text(value: Any) -> Any:
    """Every value a dashboard template writes (the Jinja `finalize` hook), before escaping;
    markup is ours (the charts, the macros) and is left as it is. A line break stays: HTML
    draws it as a space."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return _UNSEEN_ON_A_PAGE.sub(_code_point, value)
    return value


def shown_on_one_line(value: Any) -> Any:
    """A value written into a line of text (plain-text email, Slack mrkdwn): as
    `shown_as_text`, and its line breaks as code points too."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return _UNSEEN_IN_A_LINE.sub(_code_point, value)
    return value
