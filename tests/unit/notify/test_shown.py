"""Values as people are shown them: a character a screen does not draw is written as its
code point, so two values that differ never look the same."""

from __future__ import annotations

import sys
import unicodedata

import pytest

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
    """Category Cf as this Python's Unicode database has it, all of it: next to ASCII, and
    between two letters of a script that joins, where only the two joiners are left as they
    are (`می‌خواهم`), and between two emoji, where only the zero-width joiner is."""
    every = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    text = "".join(every)
    assert shown_as_text(text) == "".join(f"[U+{ord(c):04X}]" for c in every)
    for char in every:
        point = f"[U+{ord(char):04X}]"
        assert shown_as_text(f"a{char}b") == f"a{point}b", repr(char)
        assert shown_as_text(f"{char}\u06cc") == f"{point}\u06cc", repr(char)
        assert shown_as_text(f"\u06cc{char}") == f"\u06cc{point}", repr(char)
        joined = char if char in "\u200c\u200d" else point
        assert shown_as_text(f"\u06cc{char}\u062e") == f"\u06cc{joined}\u062e", repr(char)
        joined = char if char == "\u200d" else point
        assert shown_as_text(f"\U0001f468{char}\U0001f469") == f"\U0001f468{joined}\U0001f469"


# What a reader's screen draws with the joiner, selector or tags in it: each is left as it is.
DRAWN = [
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # family: man, woman, girl
    "\U0001f469\U0001f3fd\u200d\U0001f4bb",  # woman technologist, medium skin tone
    "\u2764\ufe0f",  # red heart, emoji presentation
    "\u2764\ufe0f\u200d\U0001f525",  # heart on fire
    "\U0001f3f3\ufe0f\u200d\U0001f308",  # rainbow flag
    "1\ufe0f\u20e3",  # keycap 1
    "#\ufe0f\u20e3",  # keycap #
    "\u00a9\ufe0f",  # copyright sign, emoji presentation
    "\u2194\ufe0e",  # left right arrow, text presentation
    "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",  # England
    "\U0001f3f4\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f",  # Wales
    "\U0001f3f4\U000e0075\U000e0073\U000e0063\U000e0061\U000e007f",  # US, California
    "\U0001f3f4\u200d\u2620\ufe0f",  # pirate flag
    "\U0001f9d1\U0001f3fe\u200d\U0001f9af",  # person with white cane, skin tone
    "\U0001f415\u200d\U0001f9ba",  # service dog
    "\U0001f469\u200d\u2764\ufe0f\u200d\U0001f48b\u200d\U0001f468",  # kiss
    "\U0001f441\ufe0f\u200d\U0001f5e8\ufe0f",  # eye in speech bubble
    "\U0001f3c3\u200d\u2640\ufe0f",  # woman running
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian می‌خواهم
    "\u0639\u0644\u06cc\u200c\u0631\u0636\u0627",  # Persian علی‌رضا
    "\u0915\u094d\u200d\u0937",  # Devanagari क्‍ष, half form
    "\u0915\u094d\u200c\u0937",  # Devanagari क्‌ष, explicit virama
    "\u845b\U000e0100",  # 葛 with its first ideographic variation selector
    "\u8fbb\ufe00",  # 辻, a standardized variant
    "\u1820\u180b",  # Mongolian a, free variation selector one
    "cus_\u2764\ufe0f \u0639\u0644\u06cc\u200c\u0631\u0636\u0627 1\ufe0f\u20e3",
]


def test_a_joiner_selector_or_tag_in_what_is_drawn_is_left_as_it_is() -> None:
    """The reviewer's examples: 👨‍👩‍👧 was `👨[U+200D]👩[U+200D]👧`, ❤️ `❤[U+FE0F]`, می‌خواهم
    `می[U+200C]خواهم`, 葛󠄀 `葛[U+E0100]`: text that reads as it is written looked broken."""
    for text in DRAWN:
        assert shown_as_text(text) == text, repr(text)
        assert shown_on_one_line(text) == text, repr(text)
        assert escape(text) == text, repr(text)


def _tags(text: str) -> str:
    """`text` spelt in tag characters (U+E0020-U+E007E), as a flag's tag sequence is."""
    return "".join(chr(0xE0000 + ord(char)) for char in text)


def _points(text: str) -> str:
    return "".join(f"[U+{ord(char):04X}]" for char in text)


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("cus_1\u200d", "cus_1[U+200D]"),  # next to ASCII
        ("cus_1\u200c", "cus_1[U+200C]"),
        ("a\u200db", "a[U+200D]b"),
        ("cus_1\ufe0f", "cus_1[U+FE0F]"),
        ("1\ufe0f", "1[U+FE0F]"),  # no keycap after it
        ("\u200c\u0639\u0644\u06cc", "[U+200C]\u0639\u0644\u06cc"),  # at the start
        ("\u0639\u0644\u06cc\u200c", "\u0639\u0644\u06cc[U+200C]"),  # at the end
        ("\U0001f468\u200d", "\U0001f468[U+200D]"),
        ("\ufe0f\u2764", "[U+FE0F]\u2764"),  # no base before it
        ("caf\u00e9\ufe0f", "caf\u00e9[U+FE0F]"),  # Latin: it changes nothing drawn
        ("caf\u00e9\u200c\u00e9", "caf\u00e9[U+200C]\u00e9"),
        ("\u0436\u200d\u0436", "\u0436[U+200D]\u0436"),  # Cyrillic
        ("\u845b\u200c\u845b", "\u845b[U+200C]\u845b"),  # ideographs join nothing
        ("\u0915\u200d\u0937", "\u0915[U+200D]\u0937"),  # Devanagari with no virama
        ("\u0639\u0644\u06cc\u200c\u00e9", "\u0639\u0644\u06cc[U+200C]\u00e9"),
        ("\u0639\u0644\u06cc\ufe0f", "\u0639\u0644\u06cc[U+FE0F]"),  # no variant of it
        ("caf\u00e9\U000e0100", "caf\u00e9[U+E0100]"),  # ideographic selector, no ideograph
        ("\U0001f468\u200d\u0639", "\U0001f468[U+200D]\u0639"),
        ("\u06cc\u200b\u062e", "\u06cc[U+200B]\u062e"),  # ZWSP, always
        ("\u06cc\u2060\u062e", "\u06cc[U+2060]\u062e"),  # word joiner
        ("\u06cc\u00ad\u062e", "\u06cc[U+00AD]\u062e"),  # soft hyphen
        ("\u06cc\u200f\u062e", "\u06cc[U+200F]\u062e"),  # bidi mark
        ("\ufeff\u06cc", "[U+FEFF]\u06cc"),
        ("x\U000e0067\U000e007f", "x[U+E0067][U+E007F]"),  # tags after no flag
        ("\U0001f3f4\U000e0067", "\U0001f3f4[U+E0067]"),  # no cancel tag
        ("\U0001f3f4\U000e0001\U000e007f", "\U0001f3f4[U+E0001][U+E007F]"),
        # Tags after an emoji other than the black flag, or spelling no subdivision, hid
        # text: `acme😀` + tags ` wire to acct 123` was shown `acme😀`.
        (
            "acme\U0001f600" + _tags(" wire to acct 123") + "\U000e007f",
            "acme\U0001f600" + _points(_tags(" wire to acct 123")) + "[U+E007F]",
        ),
        (
            "\u2764" + _tags("secret") + "\U000e007f",
            "\u2764" + _points(_tags("secret")) + "[U+E007F]",
        ),
        (
            "\U0001f3f4" + _tags(" wire 123") + "\U000e007f",
            "\U0001f3f4" + _points(_tags(" wire 123")) + "[U+E007F]",
        ),
        (
            "\U0001f3f4" + _tags("GBENG") + "\U000e007f",
            "\U0001f3f4" + _points(_tags("GBENG")) + "[U+E007F]",
        ),
        (
            "\U0001f3f4" + _tags("gbengland") + "\U000e007f",
            "\U0001f3f4" + _points(_tags("gbengland")) + "[U+E007F]",
        ),
        ("\U0001f3f4" + _tags("g") + "\U000e007f", "\U0001f3f4[U+E0067][U+E007F]"),
        # A joiner between two emoji that form no sequence: `cus_😀\u200d😀` looked like `cus_😀😀`.
        ("cus_\U0001f600\u200d\U0001f600", "cus_\U0001f600[U+200D]\U0001f600"),
        ("\U0001f468\u200d\U0001f4b0", "\U0001f468[U+200D]\U0001f4b0"),
    ],
)
def test_a_joiner_selector_or_tag_elsewhere_is_written_as_its_code_point(
    text: str, written: str
) -> None:
    """`cus_1` and `cus_1\\u200d` still look different."""
    assert shown_as_text(text) == written
    assert shown_on_one_line(text) == written


def test_what_a_screen_draws_is_left_as_it_is() -> None:
    text = "cus_é 名前 مرحبا 👍 a\tb\nc Ünïcödé – “quoted”"
    assert shown_as_text(text) == text
    assert shown_on_one_line("a\nb") == "a[U+000A]b"
