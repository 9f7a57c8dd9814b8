"""Text from a usage file or a Stripe event as we write it for people (the dashboard's pages,
the digests and alerts): characters a reader's screen obeys or hides instead of drawing are
written as their code point, `[U+202E]`, so what is shown is what the value holds; a joiner,
a variation selector or a flag's tags that are part of what is drawn (`می‌خواهم`, `❤️`) are
left as they are."""

from __future__ import annotations

import re
import unicodedata
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
# Tag characters after a character found are matched with it: a flag's tag sequence (🏴,
# tag letters, the cancel tag: England's flag) is kept or written whole. (An alternation,
# `tags+cancel|[…]`, took twice as long over a value not ASCII.)
_TAGS = "\U000e0020-\U000e007f"
_TAG_SEQUENCE = re.compile("[\U000e0020-\U000e007e]+\U000e007f")
# The one tag sequence a screen draws: after the black flag, a subdivision's code in lowercase
# tag letters (gbeng, gbsct, usca) and the cancel tag. Any other run of tags is hidden text:
# `acme😀` and tags spelling ` wire to acct 123` was drawn `acme😀`.
_BLACK_FLAG = "\U0001f3f4"
_SUBDIVISION_FLAG = re.compile(
    "[\U000e0061-\U000e007a]{2}[\U000e0061-\U000e007a\U000e0030-\U000e0039]{1,4}\U000e007f"
)
# (pattern for any text, pattern for ASCII text): the whole class, with its ranges past
# U+FFFF, takes 3 times as long, and most values are ASCII.
_UNSEEN_ON_A_PAGE = (re.compile(f"[{_UNSEEN}][{_TAGS}]*"), re.compile(f"[{_ASCII_CONTROLS}]"))
_UNSEEN_IN_A_LINE = (
    re.compile(f"[{_UNSEEN}{_BREAKS}][{_TAGS}]*"),
    re.compile(f"[{_ASCII_CONTROLS}\n\r]"),
)


def counted(count: int, noun: str) -> str:
    """`1 row`, `2 rows`: a count of things for people (messages, pages)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _code_point(found: re.Match[str]) -> str:
    return f"[U+{ord(found.group()):04X}]"


def _code_points(text: str) -> str:
    return "".join(f"[U+{ord(char):04X}]" for char in text)


def _unless_drawn(found: re.Match[str]) -> str:
    """The code points of what was found, unless it is part of what a screen draws (a joiner
    inside a word of a script that joins, a variation selector after its base, a flag's tags
    after its flag): `می‌خواهم`, `👨‍👩‍👧`, `❤️`, `葛󠄀` are left as they are."""
    text, at, end, chars = found.string, found.start(), found.end(), found.group()
    before = text[at - 1] if at else ""
    if _TAG_SEQUENCE.fullmatch(chars):
        return chars if _drawn_in(chars, before, "") else _code_points(chars)
    after = chars[1] if len(chars) > 1 else text[end] if end < len(text) else ""
    first = chars[0] if _drawn_in(chars[0], before, after, text[at - 2] if at > 1 else "") else ""
    return (first or _code_points(chars[0])) + _code_points(chars[1:])


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
    if value.isascii():
        return unseen[1].sub(_code_point, value)
    return unseen[0].sub(_unless_drawn, value)


# Joiners and variation selectors, which draw nothing themselves but change how their
# neighbours are drawn: each is kept where it changes what is drawn, and written as its code
# point elsewhere (next to ASCII, at a value's start or end, between Latin or CJK letters,
# which it changes nothing of): `cus_1` and `cus_1\u200d` still look different.
_JOINERS = "\u200c\u200d"
_VIRAMA = 9  # the canonical combining class of a virama (Devanagari's U+094D)
# Scripts whose letters join (Unicode's Joining_Type): Arabic (Persian, Urdu), Syriac, NKo,
# Mongolian, Phags-pa, Manichaean to Hanifi Rohingya, Sogdian and its neighbours.
_JOINING = (
    (0x0600, 0x08FF),
    (0x1800, 0x18AF),
    (0xA840, 0xA87F),
    (0xFB50, 0xFDFF),
    (0xFE70, 0xFEFF),
    (0x10AC0, 0x10D3F),
    (0x10F30, 0x10FFF),
)
_IDEOGRAPHS = (
    (0x2E80, 0x2FDF),
    (0x3005, 0x3007),
    (0x3400, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x3FFFF),
)
_MONGOLIAN = ((0x1800, 0x18AF),)
_MONGOLIAN_SELECTORS = "\u180b\u180c\u180d\u180f"
# What follows a zero-width joiner in Unicode's recommended emoji ZWJ sequences (15.1): people
# (👨‍👩‍👧), hearts and kisses, gender signs, the objects of professions (👩🏽‍💻), hair, and the
# few others (🏳️‍🌈, ❤️‍🔥, 🏴‍☠️, 🐕‍🦺, 🐈‍⬛, 🙂‍↔️). A joiner before anything else joins nothing a
# screen draws: `cus_😀\u200d😀` was drawn `cus_😀😀`.
_AFTER_A_JOINER = (
    (0x2194, 0x2195),  # arrows (head shaking)
    (0x2620, 0x2620),  # skull and crossbones (pirate flag)
    (0x2640, 0x2640),
    (0x2642, 0x2642),
    (0x2695, 0x2696),
    (0x26A7, 0x26A7),  # transgender symbol
    (0x2708, 0x2708),
    (0x2744, 0x2744),  # snowflake (polar bear)
    (0x2764, 0x2764),
    (0x27A1, 0x27A1),
    (0x2B1B, 0x2B1B),
    (0x1F308, 0x1F308),
    (0x1F32B, 0x1F32B),
    (0x1F33E, 0x1F33E),
    (0x1F373, 0x1F373),
    (0x1F37C, 0x1F37C),
    (0x1F384, 0x1F384),
    (0x1F393, 0x1F393),
    (0x1F3A4, 0x1F3A4),
    (0x1F3A8, 0x1F3A8),
    (0x1F3EB, 0x1F3EB),
    (0x1F3ED, 0x1F3ED),
    (0x1F466, 0x1F469),  # boy, girl, man, woman
    (0x1F48B, 0x1F48B),
    (0x1F4A5, 0x1F4A5),
    (0x1F4A8, 0x1F4A8),
    (0x1F4AB, 0x1F4AB),
    (0x1F4BB, 0x1F4BC),
    (0x1F525, 0x1F525),
    (0x1F527, 0x1F527),
    (0x1F52C, 0x1F52C),
    (0x1F5E8, 0x1F5E8),
    (0x1F680, 0x1F680),
    (0x1F692, 0x1F692),
    (0x1F7E9, 0x1F7E9),
    (0x1F7EB, 0x1F7EB),
    (0x1F91D, 0x1F91D),
    (0x1F9AF, 0x1F9AF),
    (0x1F9B0, 0x1F9B3),  # hair
    (0x1F9BA, 0x1F9BA),
    (0x1F9BC, 0x1F9BD),
    (0x1F9D1, 0x1F9D2),  # person, child
    (0x1FA79, 0x1FA79),
    (0x1FAF2, 0x1FAF2),
)
_KEYCAP = "\u20e3"  # 1️⃣ is 1, U+FE0F, U+20E3: its selector follows an ASCII digit


def _drawn_in(found: str, before: str, after: str, before_that: str = "") -> bool:
    """Whether `found` (a character, or a flag's tag sequence), between `before` and `after`,
    is part of what a screen draws: a zero-width (non-)joiner after a virama or between two
    letters of a script that joins (in the spirit of IDNA's CONTEXTJ rule: `क्‍ष`,
    `می‌خواهم`), a zero-width joiner between two emoji (`👨‍👩‍👧`, `🏳️‍🌈`), a variation selector
    after its base (`❤️`, `↔︎`, `葛󠄀`, the keycap `1️⃣`), a subdivision's tags after the black
    flag (🏴 gbeng: England's flag)."""
    if len(found) > 1:  # a tag sequence
        return before == _BLACK_FLAG and _SUBDIVISION_FLAG.fullmatch(found) is not None
    point = ord(found)
    if found in _JOINERS:
        return _joined(found, before, after, before_that)
    if found in _MONGOLIAN_SELECTORS:
        return _in(before, _MONGOLIAN)
    if 0xE0100 <= point <= 0xE01EF:  # ideographic variation selectors
        return _in(before, _IDEOGRAPHS)
    if 0xFE00 <= point <= 0xFE0F:
        keycap = after == _KEYCAP and before != "" and before in "#*0123456789"
        return keycap or _is_symbol(before, "SP") or _in(before, _IDEOGRAPHS) or before == "ℹ"
    return False


def _joined(joiner: str, before: str, after: str, before_that: str) -> bool:
    if _joins(before, after):
        return True
    emoji_before = _is_symbol(before) or (before == "\ufe0f" and _is_symbol(before_that))
    return joiner == "\u200d" and emoji_before and _in(after, _AFTER_A_JOINER)


def _joins(before: str, after: str) -> bool:
    """A letter or mark after a virama, or between two letters of a script that joins."""
    if not (_is_letter_or_mark(before) and _is_letter_or_mark(after)):
        return False
    after_virama = unicodedata.combining(before) == _VIRAMA
    return after_virama or (_in(before, _JOINING) and _in(after, _JOINING))


def _is_letter_or_mark(char: str) -> bool:
    return bool(char) and not char.isascii() and unicodedata.category(char)[0] in "LM"


def _in(char: str, ranges: tuple[tuple[int, int], ...]) -> bool:
    return bool(char) and any(low <= ord(char) <= high for low, high in ranges)


def _is_symbol(char: str, kinds: str = "S") -> bool:
    """A symbol, not ASCII (an emoji, a skin tone, `©`, `↔`; `‼` among punctuation)."""
    return bool(char) and not char.isascii() and unicodedata.category(char)[0] in kinds
