"""JSON numbers with a fraction or an exponent, kept as the text they had in their file.

`json.loads` reads `12345678901234567.25` as the float 1.2345678901234568e+16 and `json.dumps`
writes that back: a billed value changed, with nothing in the audit. Our readers read such a
number as a float when `repr` of that float is its text (`0.1`, `12.5`: most are), and
otherwise as a `JsonNumber`: a float (so every check, comparison and sum of it works as one)
that remembers its text and gives it back (`str`, `repr`, `Column` texts); `dumps` writes it
so. Either way a number's `repr` is its text in the file, and that is what is checked, written
and sent; a rule that changes a value writes a new one and records the change
(`core.rules.values`). Integers need none of this: Python's are exact.
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


def json_float(text: str) -> float:
    """A JSON number with a fraction or an exponent: the float whose `repr` is `text`, else a
    `JsonNumber` of it."""
    value = float(text)
    return value if repr(value) == text else JsonNumber(text)


_EXACT = json.JSONDecoder(parse_float=json_float)


def loads(text: str | bytes | bytearray | memoryview) -> Any:
    """`json.loads`, a number with a fraction or an exponent read by `json_float` (bytes are
    UTF-8 text: a database driver hands a JSON column's value over so)."""
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8")
    return _EXACT.decode(text)


def dumps(value: object, separators: tuple[str, str] = (",", ":")) -> str:
    """`json.dumps(value, ensure_ascii=False, separators=separators)`, but a `JsonNumber`
    anywhere in it written as its text (json's encoder writes every float as `float.__repr__`
    spells it, whatever its class). Once per row written: kept to json's own arguments."""
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


def _holds_number(value: object) -> bool:
    if type(value) is JsonNumber:
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
    if type(value) is JsonNumber:
        return value.text
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
