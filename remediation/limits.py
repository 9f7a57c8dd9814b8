"""Field limits: what validation enforces before anything is parsed or sent (one list).

Stripe publishes the first two (identifier, event name); the others are our assumptions
(docs/architecture.md, "Field limits"). Each is a `[policy]` key of the rules file under the
same name.
Reading has its own caps (a line, a field, a JSON element): past them a row or a file is
refused with a reason instead of being held in memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from remediation.jsonnumbers import dumps

# Reading caps (characters): generous next to the field limits, small next to memory.
MAX_LINE_CHARS = 16 * 1024 * 1024  # a JSON Lines line, a JSON array element, a CSV field
MAX_TIMESTAMP_DIGITS = 20  # unix nanoseconds have 19; more is not a time at all
MAX_ISO_TEXT = 64  # an ISO-8601 timestamp is about 30 characters
# U+0000 to U+001F, U+007F, U+2028, U+2029: never allowed in any field sent to Stripe.
CONTROL = re.compile("[\x00-\x1f\x7f\u2028\u2029]")


@dataclass(frozen=True, slots=True)
class FieldLimits:
    max_identifier_chars: int = 100  # Stripe
    max_event_name_chars: int = 100  # Stripe
    max_payload_key_chars: int = 100
    max_payload_value_chars: int = 100
    max_value_integer_digits: int = 20
    max_value_decimal_places: int = 12
    max_json_depth: int = 32


DEFAULT_LIMITS = FieldLimits()
LIMIT_NAMES = frozenset(f.name for f in fields(FieldLimits))


def shown(value: object, width: int = 40) -> str:
    """`repr(value)` for a reason (a JSON boolean, object or list as JSON spells it), cut to
    about `width` characters (a row may hold megabytes); a field that is not there (an empty
    CSV cell, a missing JSON key) is `(empty)`."""
    if value is None:
        return "(empty)"
    if isinstance(value, str) and len(value) > width:
        return f"{value[:width]!r}… ({len(value)} characters)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"a number of about {int(value.bit_length() * 0.30103) + 1} digits"  # no str()
    if isinstance(value, bool):  # as the file spelt it (it said `True`)
        return "true" if value else "false"
    # an object or list as its JSON text (it said `{'id': 'cus_1'}`, Python's spelling)
    text = dumps(value) if isinstance(value, dict | list) else repr(value)
    return text if len(text) <= width + 2 else f"{text[:width]}… ({len(text)} characters)"


def control_character(text: str) -> str | None:
    """A description of the first control character in `text`, or None."""
    found = CONTROL.search(text)
    if found is None:
        return None
    char = found.group()
    kind = " (a line break: a quote left open?)" if char in "\r\n" else ""
    return f"U+{ord(char):04X} at position {found.start() + 1}{kind}"


def json_depth_over(text: str, limit: int) -> bool:
    """Whether JSON text nests deeper than `limit` levels (brackets outside strings)."""
    if text.count("[") + text.count("{") <= limit:
        return False  # cannot be deeper than the brackets it holds: the common, cheap case
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def json_value_end(text: str, start: int) -> int | None:
    """Where the object or array opening at `text[start]` closes (the index past its closing
    bracket), counting brackets outside strings; None when `text` ends first. Its nesting is
    not bounded: what the decoder cannot read (`RecursionError`) is measured here."""
    depth = 0
    for token in _JSON_TOKEN.finditer(text, start):
        char = token.group()
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return token.end()
    return None


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.S)
