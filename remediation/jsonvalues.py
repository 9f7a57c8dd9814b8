"""One JSON value (a line of JSON Lines, or an element of an array), and why it is refused.

Its nesting is measured on the text before it is parsed (a line) or on the element's text
(`jsonarraystream`). A key named twice in one object is a malformed row: which value Stripe
should get is unknowable, so nothing is guessed. So is a number JSON does not have (`NaN`,
`Infinity`, or one past a float's range such as `1e999`): `json.loads` reads it as a float
and `json.dumps` writes it back as no JSON reader takes (Stripe's, PostgreSQL's), so it
would reach a corrected file or fail the database's insert. Every other number with a
fraction or an exponent is read by `jsonnumbers.json_float`: its text, as written, is what
goes out again (a float's `repr` of it would change a billed value unseen); so is the
integer `-0` (`jsonnumbers.json_int`, for a line or element whose text holds `-0` only).
Apart so that a line and an array element are refused alike, by one set of checks.
"""

from __future__ import annotations

import json
import math
import re

from remediation.jsonnumbers import json_float, json_int
from remediation.limits import json_depth_over

# Keys a row may name, its own and its payload's (each one a column of its batch, worked on by
# every check and writer: a row of 1,000,000 ran for over 9 minutes, past 7 GB); a meter reads
# a few. Stripe publishes no bound: assumed, far above any usage row.
MAX_ROW_KEYS = 1000


def decode_error(exc: json.JSONDecodeError) -> str:
    """What the decoder found wrong, in words: its message alone ends in a dangling "at"
    where it names a character ("Invalid control character at"), whose place is left out."""
    what = exc.msg.removesuffix(" at")
    hint = " (a NUL, a tab, a line break or another such character in a string)"
    return what + (hint if "control" in what else "")


def parse_line(text: str, depth: int) -> tuple[object, str | None]:
    """(the JSON value, None), or (None, why it is refused): nesting is measured before the
    text is parsed; a key named twice in one object is ambiguous. The cheap tests come first:
    they run on every line."""
    if text.count("[") + text.count("{") > depth and json_depth_over(text, depth):
        return None, f"is nested deeper than {depth} levels"
    try:
        # `jsonnumbers.may_hold_minus_zero`, inlined: this runs on every line read here
        signed = "-" in text and "-0" in text
        obj = (_STRICT_SIGNED if signed else _STRICT).decode(text)
    except json.JSONDecodeError as exc:
        return None, f"is not JSON: {decode_error(exc)}"
    except NotJsonNumber as exc:
        return None, exc.reason
    except RecursionError:
        return None, f"is nested deeper than {depth} levels"
    except ValueError:  # int() refuses a number of more than 4300 digits
        return None, "holds a number too long to read (thousands of digits)"
    too_many = too_many_keys(obj)
    if too_many is not None:
        return None, too_many
    keys = record_keys(obj)
    if text.count(":") > keys:  # else no key was named twice: see `duplicate_key`
        duplicate = duplicate_key(text, 0, len(text), keys, multiline=False)
        if duplicate is not None:
            return None, f"names key {duplicate!r} twice in one object; nothing guessed"
    if SURROGATE_ESCAPE.search(text) and lone_surrogate(obj):
        return None, LONE_SURROGATE
    return obj, None


class NotJsonNumber(ValueError):
    """A number JSON does not have, met while decoding (see the module's docstring)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        shown = text if len(text) <= 40 else text[:40] + "…"
        if text in _CONSTANTS:
            self.reason = f"holds {text}, which is not a JSON number"
        else:
            self.reason = f"holds the number {shown}, past the range of a float"


_CONSTANTS = ("NaN", "Infinity", "-Infinity")


def _refuse_constant(text: str) -> float:
    raise NotJsonNumber(text)


def _finite_float(text: str) -> float:
    value = json_float(text)
    if not math.isfinite(value):
        raise NotJsonNumber(text)
    return value


# Decodes as json.loads does, refusing the numbers JSON does not have (`NotJsonNumber`), a
# number with a fraction or an exponent kept as its text (`jsonnumbers.json_float`); for a
# line that may hold `-0`, every integer read by `jsonnumbers.json_int` (a Python call per
# integer: only there).
_STRICT = json.JSONDecoder(parse_float=_finite_float, parse_constant=_refuse_constant)
_STRICT_SIGNED = json.JSONDecoder(
    parse_float=_finite_float, parse_constant=_refuse_constant, parse_int=json_int
)


# A lone surrogate escape (`\ud800` without its pair) decodes to a string no UTF-8 output, no
# database and no Stripe request can hold: the line is refused and quarantined as it was
# written (its text has the escape, never the character). Only a line with such an escape
# can hold one (strict UTF-8 decoding refuses encoded surrogates).
LONE_SURROGATE = "holds a lone UTF-16 surrogate escape (\\ud800-\\udfff): not Unicode text"
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def lone_surrogate(value: object) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def too_many_keys(obj: object) -> str | None:
    """Why a decoded row names more keys than a row may (`MAX_ROW_KEYS`), or None."""
    if type(obj) is not dict:
        return None
    payload = obj.get("payload")
    named = len(obj) + (len(payload) if type(payload) is dict else 0)
    if named <= MAX_ROW_KEYS:
        return None
    return f"names {named} keys (its own and its payload's); at most {MAX_ROW_KEYS} are read"


def record_keys(obj: object) -> int:
    """Keys of a decoded record and of its `payload` and `error` objects (a lower bound of the
    keys its text names: other objects only add to those)."""
    if type(obj) is not dict:
        return 0
    keys = len(obj)
    payload, error = obj.get("payload"), obj.get("error")
    if type(payload) is dict:
        keys += len(payload)
    if type(error) is dict:
        keys += len(error)
    return keys


def duplicate_key(
    text: str, start: int, end: int, keys: int, *, multiline: bool = True
) -> str | None:
    """A key named twice in one object of `text[start:end]` (json keeps the last), or None;
    `keys` is what `record_keys` found decoded.

    Cheap first: every key is followed by its own colon, right after its closing quote or
    after blanks. So when the colons (or failing that, the colons after a quote or a blank)
    are no more than `keys`, no key was named twice (the text names at least those keys, and
    a key named twice or a key of another object would need one more colon). Otherwise the
    text is decoded again, watching the pairs of every object. A JSON line holds no line
    break (`multiline=False`)."""
    if text.count(":", start, end) <= keys:
        return None
    after = text.count('":', start, end) + text.count(" :", start, end)
    after += text.count("\t:", start, end)
    if multiline:
        after += text.count("\n:", start, end) + text.count("\r:", start, end)
    if after <= keys:
        return None
    found: list[str] = []
    json.loads(text[start:end], object_pairs_hook=lambda pairs: _pairs(pairs, found))
    return found[0] if found else None


def _pairs(pairs: list[tuple[str, object]], found: list[str]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs) and not found:
        seen: set[str] = set()
        found.extend(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
    return obj
