"""JSON numbers with a fraction or an exponent, kept as the text they had in their file.

`json.loads` reads `12345678901234567.25` as the float 1.2345678901234568e+16 and `json.dumps`
writes that back: a billed value changed, with nothing in the audit. Our readers read such a
number as a float when `repr` of that float is its text (`0.1`, `12.5`: most are), and
otherwise as a `JsonNumber`: a float (so every check, comparison and sum of it works as one)
that remembers its text and gives it back (`str`, `repr`, `Column` texts); `dumps` writes it
so. Either way a number's `repr` is its text in the file, and that is what is checked, written
and sent; a rule that changes a value writes a new one and records the change
(`core.rules.values`). Integers are exact in Python, but one has a text its int has not: `-0`
(read as 0, written `0`). It is read as `MINUS_ZERO`, an int 0 whose text is `-0`, by a
decoder taken only for a text holding `-0` (`json_int` is called for every integer it reads;
a text without `-0` keeps json's own int reading).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


class JsonNumber(float):
    """A JSON number with a fraction or an exponent, and its text as it was written."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[JsonNumber], tuple[str]]:
        return JsonNumber, (self.text,)


class MinusZero(int):
    """The JSON integer `-0`: the int 0 (every check, comparison and sum of it as 0), written
    back as `-0`."""

    __slots__ = ()

    def __new__(cls) -> MinusZero:
        return super().__new__(cls, 0)

    def __repr__(self) -> str:
        return "-0"

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[MinusZero], tuple[()]]:
        return MinusZero, ()


MINUS_ZERO = MinusZero()


def json_int(text: str) -> int:
    """A JSON integer: its int, `-0` as `MINUS_ZERO`."""
    return MINUS_ZERO if text == "-0" else int(text)


def may_hold_minus_zero(text: str) -> bool:
    """Whether a JSON text may hold the integer `-0` (a `-0.5` or a string holding `-0` too:
    decoded the slower way for nothing, never wrongly). A "-" alone is looked for first:
    most rows have none, and that search costs next to nothing (searching a typical row for
    `-0` took 7 % of the time its decode took)."""
    return "-" in text and "-0" in text


def json_float(text: str) -> float:
    """A JSON number with a fraction or an exponent: the float whose `repr` is `text`, else a
    `JsonNumber` of it."""
    value = float(text)
    return value if repr(value) == text else JsonNumber(text)


def underflows(text: str, value: float) -> bool:
    """Whether `value`, the float of the JSON number `text` written with an exponent, is 0
    while the number is not (`1e-400`: past a float's range the other way; judged by that
    value, it was sent to Stripe as `0`). A plain decimal so small keeps its text, by which
    it is judged (`0.000…1`, its 400 places)."""
    if value != 0 or ("e" not in text and "E" not in text):
        return False
    mantissa = text.replace("E", "e").partition("e")[0]
    return mantissa.strip("-+.0") != ""


_EXACT = json.JSONDecoder(parse_float=json_float)
_EXACT_SIGNED = json.JSONDecoder(parse_float=json_float, parse_int=json_int)


def loads(text: str | bytes | bytearray | memoryview) -> Any:
    """`json.loads`, a number with a fraction or an exponent read by `json_float`, `-0` by
    `json_int` (bytes are UTF-8 text: a database driver hands a JSON column's value over so)."""
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8")
    return (_EXACT_SIGNED if may_hold_minus_zero(text) else _EXACT).decode(text)


def dumps(value: object, separators: tuple[str, str] = (",", ":")) -> str:
    """`json.dumps(value, ensure_ascii=False, separators=separators)`, but a `JsonNumber` or
    `MINUS_ZERO` anywhere in it written as its text (json's encoder writes every float as
    `float.__repr__` spells it and every int as `int.__repr__`, whatever its class). Once per
    row written: kept to json's own arguments."""
    if not _holds_number(value):
        return json.dumps(value, ensure_ascii=False, separators=separators)
    return _written(value, separators, False, _PLAIN)


def dumps_as(
    value: object,
    separators: tuple[str, str],
    *,
    ensure_ascii: bool = False,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> str:
    """`dumps` with json's other options (a web page or an API answer showing stored rows)."""
    options: dict[str, Any] = {"ensure_ascii": ensure_ascii, "default": default}
    if not _holds_number(value):
        return json.dumps(value, separators=separators, sort_keys=sort_keys, **options)
    return _written(value, separators, sort_keys, options)


_PLAIN: dict[str, Any] = {"ensure_ascii": False, "default": None}


def _own_text(value: object) -> bool:
    """A number written as its text in the file, not as json's encoder spells its class."""
    kind = type(value)
    return kind is JsonNumber or kind is MinusZero


def _holds_number(value: object) -> bool:
    if _own_text(value):
        return True
    if type(value) is dict:
        return any(_holds_number(v) for v in value.values())
    if type(value) is list:
        return any(_holds_number(v) for v in value)
    return False


def _written(
    value: object, separators: tuple[str, str], sort_keys: bool, options: dict[str, Any]
) -> str:
    item, key = separators
    if _own_text(value):
        return repr(value)
    if type(value) is dict:
        items = sorted(value.items()) if sort_keys else value.items()
        pairs = (
            _key(k, options) + key + _written(v, separators, sort_keys, options) for k, v in items
        )
        return "{" + item.join(pairs) + "}"
    if type(value) is list:
        return "[" + item.join(_written(v, separators, sort_keys, options) for v in value) + "]"
    return json.dumps(value, separators=separators, sort_keys=sort_keys, **options)


def _key(key: object, options: dict[str, Any]) -> str:
    """A key as json.dumps writes it (a key that is not text as its JSON text, quoted)."""
    text = key if isinstance(key, str) else json.dumps(key)
    return json.dumps(text, ensure_ascii=options["ensure_ascii"])
