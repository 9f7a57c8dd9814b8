"""Values as people are shown them: a character a screen does not draw is written as its
code point, so two values that differ never look the same."""

from __future__ import annotations

import sys
import unicodedata

from service.notify.shown import shown_as_text, shown_on_one_line
from service.notify.slack_blocks import escape

# Each draws nothing (or a blank) where a customer id or an object key shows it.
INVISIBLE = [
    "\u200b",  # ZERO WIDTH SPACE
    "\u200d",  # ZERO WIDTH JOINER
    "\ufeff",  # ZERO WIDTH NO-BREAK SPACE (BOM)
    "\u2060",  # WORD JOINER
    "\u00ad",  # SOFT HYPHEN
    "\u180e",  # MONGOLIAN VOWEL SEPARATOR
    "\u3164",  # HANGUL FILLER
    "\u115f",  # HANGUL CHOSEONG FILLER
    "\u1160",  # HANGUL JUNGSEONG FILLER
    "\uffa0",  # HALFWIDTH HANGUL FILLER
    "\u034f",  # COMBINING GRAPHEME JOINER
    "\ufe0f",  # VARIATION SELECTOR-16
    "\U000e0001",  # LANGUAGE TAG
    "\U000e0041",  # TAG LATIN CAPITAL LETTER A
    "\U000e007f",  # CANCEL TAG
]


def test_an_invisible_character_is_written_as_its_code_point() -> None:
    """README: "a bidi control or another invisible control character … is written as its
    code point". Zero-width and other format characters (category Cf), tag characters and
    the Hangul fillers went through as they were: `cus_1` and `cus_1\\u200b` looked the same
    in the digest, the alerts and the dashboard."""
    for char in INVISIBLE:
        point = f"[U+{ord(char):04X}]"
        assert shown_as_text(f"cus_1{char}") == f"cus_1{point}", repr(char)
        assert shown_on_one_line(f"cus_1{char}") == f"cus_1{point}", repr(char)
        assert escape(f"cus_1{char}") == f"cus_1{point}", repr(char)


def test_every_format_character_is_written_as_its_code_point() -> None:
    """Category Cf as this Python's Unicode database has it, all of it."""
    every = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    text = "".join(every)
    assert shown_as_text(text) == "".join(f"[U+{ord(c):04X}]" for c in every)


def test_what_a_screen_draws_is_left_as_it_is() -> None:
    text = "cus_é 名前 مرحبا 👍 a\tb\nc Ünïcödé – “quoted”"
    assert shown_as_text(text) == text
    assert shown_on_one_line("a\nb") == "a[U+000A]b"
