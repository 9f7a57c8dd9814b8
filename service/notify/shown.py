"""Text from a usage file or a Stripe event as we write it for people (the dashboard's pages,
the digests and alerts): characters a reader's screen obeys or hides instead of drawing are
written as their code point, `[U+202E]`, so what is shown is what the value holds."""

from __future__ import annotations

import re
from typing import Any

from markupsafe import Markup

# Control characters other than tab and line breaks, C1 ones too (U+009B starts a terminal's
# escape sequence where a plain-text email is read in one).
_ASCII_CONTROLS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
_CONTROLS = _ASCII_CONTROLS + "\x80-\x84\x86-\x9f"
# Format characters (category Cf, Unicode 15): bidi controls (U+202E draws
# `report-\u202evsc.exe` as `report-exe.csv`, an executable shown as a CSV file), zero-width
# ones (`cus_1\u200b` looked like `cus_1`), the soft hyphen, tags (U+E0001, U+E0020-U+E007F).
_FORMAT = (
    "\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
# The other default-ignorable code points (Unicode's Default_Ignorable_Code_Point), which a
# screen draws as nothing or a blank: the combining grapheme joiner, the Hangul fillers
# (U+3164 draws a blank), variation selectors, the rest of the tag block.
_IGNORABLE = (
    "\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2065\u3164\ufe00-\ufe0f\uffa0\ufff0-\ufff8"
    "\U000e0000-\U000e0fff"
)
_UNSEEN = _CONTROLS + _FORMAT + _IGNORABLE
# A line break in a value of a line of text (an email's plain text, a Slack message) starts
# a line of its own, that the value writes: `in/a.csv\nAlerts: https://…` under ours.
_BREAKS = "\n\r\x85\u2028\u2029"
# (pattern for any text, pattern for ASCII text): the whole class, with its ranges past
# U+FFFF, takes 3 times as long, and most values are ASCII.
_UNSEEN_ON_A_PAGE = (re.compile(f"[{_UNSEEN}]"), re.compile(f"[{_ASCII_CONTROLS}]"))
_UNSEEN_IN_A_LINE = (
    re.compile(f"[{_UNSEEN}{_BREAKS}]"),
    re.compile(f"[{_ASCII_CONTROLS}\n\r]"),
)


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
        return _shown(_UNSEEN_ON_A_PAGE, value)
    return value


def shown_on_one_line(value: Any) -> Any:
    """A value written into a line of text (plain-text email, Slack mrkdwn): as
    `shown_as_text`, and its line breaks as code points too."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return _shown(_UNSEEN_IN_A_LINE, value)
    return value


def _shown(unseen: tuple[re.Pattern[str], re.Pattern[str]], value: str) -> str:
    return (unseen[1] if value.isascii() else unseen[0]).sub(_code_point, value)
