"""What a value was in its file (`Kind`), and a typed value as its text and kind and back: how
a column (`column`) holds a JSON value that is not a string, so a number stays a number.
"""

from __future__ import annotations

from enum import IntEnum

from remediation.jsonnumbers import dumps, json_float, json_int, loads


class Kind(IntEnum):
    """What a value was in its file (CSV cells are all TEXT)."""

    TEXT = 0
    INT = 1
    FLOAT = 2
    BOOL = 3
    NULL = 4  # a JSON null (a key present with no value)
    JSON = 5  # an object or array, held as its JSON text


def typed_text(value: object) -> tuple[str | None, int]:
    """(text, kind) of a typed value; None is absent."""
    if value is None:
        return None, Kind.TEXT
    if isinstance(value, str):
        return value, Kind.TEXT
    if isinstance(value, bool):
        return ("true" if value else "false"), Kind.BOOL
    if isinstance(value, int):
        return str(value), Kind.INT
    if isinstance(value, float):  # a JsonNumber's repr is its text in the file
        return repr(value), Kind.FLOAT
    return dumps(value, (", ", ": ")), Kind.JSON


def present_text(value: object) -> tuple[str, int]:
    """(text, kind) of a value that is present even when None (a payload key set to null)."""
    if value is None:
        return "null", Kind.NULL
    text, kind = typed_text(value)
    assert text is not None
    return text, kind


def value_of(text: str | None, kind: int) -> object:
    """The typed value back from its text and kind."""
    if text is None:
        return None
    if kind == Kind.TEXT:
        return text
    if kind == Kind.INT:
        return json_int(text)  # `-0` kept
    if kind == Kind.FLOAT:
        return json_float(text)
    if kind == Kind.BOOL:
        return text == "true"
    if kind == Kind.NULL:
        return None
    return loads(text)
