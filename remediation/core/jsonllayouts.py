"""JSON Lines layouts: what `json.dumps` writes for a line, learned from one decoded line
(`jsonlread` matches lines against layouts, `jsonlshapes` groups lines by shape and reads each
shape with its layout; `jsonlbatch` makes the batch of rows a layout's values make).

A layout is a line's text with each value replaced by what such a value may look like (a
string without escapes, quotes or control characters; an integer or a float as `json.dumps`
writes one; true or false; null: these three in the payload and other keys of the row only),
learned only when the line's text is exactly what `json.dumps` writes for it (compact
separators, its default ones, or those it uses with `indent`). A line of a layout split at its
quotes has each value at a known place (`Leaf`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cached_property

from remediation.core.columns import Kind
from remediation.jsonnumbers import JsonNumber, dumps
from remediation.jsonrecords import JSON_KNOWN, NO_PAYLOAD, not_the_rows
from remediation.records import ERROR_FIELDS, MFX_PREFIX

MAX_NUMBER_CHARS = 1000

# What a value may look like in a matched line: a string with no escape, quote or control
# character; a number: an integer as json.dumps writes one, or a float without exponent (its
# text is kept as it is, as the line reader keeps it: `jsonnumbers`), a number at most
# `MAX_NUMBER_CHARS` long (json.loads refusing more than 4,300 digits) and a float within a
# float's range (`jsonlbatch.in_range`): both checked once split out. Integers and
# floats share a slot (kind INT in a layout; FLOAT per row, where the text has a point), so
# one layout serves a column holding both. No counted repetition: RE2 unrolls it, and a
# pattern holding `{0,999}` took 7 ms to compile, once per batch and layout.
SLOTS = {
    Kind.TEXT: '[^"\\\\\\x00-\\x1f]*',  # between the quotes around it
    Kind.INT: "(?:0|-?[1-9][0-9]*|-?(?:0|[1-9][0-9]*)\\.[0-9]+)",
    Kind.BOOL: "(?:true|false)",
    Kind.NULL: "null",
}
# Groups whose values may be true, false or null in a layout: the record path keeps them as
# typed values there (`present_text`); the identifier, event name and timestamp it reads as
# text or absent, and the error fields through `resolve_error`, so lines with such values
# there are left to it.
_LITERAL_GROUPS = ("payload", "extra", "ignored")
# Groups read as text: a number there is read as its text by the record path, which keeps the
# number too (a quarantined row is written with it), so lines with one are left to it.
_TEXT_GROUPS = ("identifier", "event_name")
# json.dumps's separators: compact, its default, and the pair it uses with `indent` (a
# pretty-printed JSON array's elements, their line breaks and indents taken out: `jsonarray`)
_STYLES = ((",", ":"), (", ", ": "), (",", ": "))


@dataclass(frozen=True)
class Leaf:
    """One value of a layout: where it sits in the record, what kind `json.loads` gives it,
    and where its text is in a matched line split at its quotes."""

    group: str  # "identifier", "timestamp", "event_name", "payload", "extra" or "error"
    key: str
    kind: Kind  # TEXT, or INT: a number
    path: tuple[str, ...]  # its keys from the record's top
    piece: int = 0  # which piece of the line split at '"'
    start: int = 0  # a number: where it starts in its piece,
    stop: int | None = None  # and where it stops (counted from the piece's end)


@dataclass(frozen=True)
class Layout:
    pattern: str  # the whole line (RE2, no captures: matched by its DFA)
    leaves: tuple[Leaf, ...]
    pieces: int  # pieces of a matched line split at '"'
    payload_keys: tuple[str, ...]
    extra_keys: tuple[str, ...]

    def __hash__(self) -> int:
        """The pattern's (a text's hash is kept with it; equal layouts have equal patterns):
        a batch of many shapes counting each layout's lines hashed every leaf each time."""
        return hash(self.pattern)

    @cached_property
    def columns(self) -> tuple[tuple[tuple[str, str, tuple[str, ...]], Leaf], ...]:
        """Each leaf with the column it fills: (group, key, path)."""
        return tuple(((leaf.group, leaf.key, leaf.path), leaf) for leaf in self.leaves)


def learn(obj: object, line: str, depth: int) -> Layout | None:
    """The layout of a decoded line, or None when its text is not one `json.dumps` writes
    for it or it holds a value this reader leaves to the record path."""
    if type(obj) is not dict or not obj:
        return None
    separators = _style(obj, line)
    if separators is None:
        return None
    comma, colon = separators
    tokens: list[str | Leaf] = ["{"]
    payload_keys: tuple[str, ...] = ()
    extra_keys: list[str] = []
    nested = False
    for at, (key, value) in enumerate(obj.items()):
        if not plain(key) or _spelt_otherwise(key):
            return None
        tokens.append(f'{comma if at else ""}"{key}"{colon}')
        if key == "payload" or (key == "error" and type(value) is dict):
            inner = _object_tokens(key, value, comma, colon)
            if inner is None:
                return None
            tokens += inner
            nested = True
            if key == "payload":
                payload_keys = tuple(value)
            continue
        leaf = _top_leaf(key, value)
        if leaf is None:
            return None
        if leaf.group == "extra":
            extra_keys.append(key)
        tokens += _slot(leaf)
    tokens.append("}")
    if (2 if nested else 1) > depth:
        return None
    if "payload" not in obj:  # marked as the record path marks it (`jsonlbatch.no_payload`)
        extra_keys.append(NO_PAYLOAD)
    pattern = "^" + "".join(_pattern(t) for t in tokens) + "$"
    leaves, pieces = _placed(tokens)
    return Layout(pattern, leaves, pieces, payload_keys, tuple(extra_keys))


def _spelt_otherwise(key: str) -> bool:
    """An error field or `mfx_` note in another case (`Error_Code`): the record path reads
    it (`jsonrecords.not_the_rows`), rare as it is."""
    return key != key.lower() and not_the_rows(key)


def _style(obj: dict[str, object], line: str) -> tuple[str, str] | None:
    """The separators `json.dumps` writes `obj` with to give `line`, if any of `_STYLES`."""
    for separators in _STYLES:
        if dumps(obj, separators) == line:
            return separators
    return None


def _object_tokens(key: str, value: object, comma: str, colon: str) -> list[str | Leaf] | None:
    """The tokens of the object under `key` (the payload, or a nested error), or None when it
    is no object or holds a value this reader leaves to the record path."""
    if type(value) is not dict:
        return None
    group = "payload" if key == "payload" else "error"
    tokens: list[str | Leaf] = ["{"]
    for inner_at, (inner_key, inner_value) in enumerate(value.items()):
        kind = _kind(inner_value)
        if kind is None or not plain(inner_key):
            return None
        tokens.append(f'{comma if inner_at else ""}"{inner_key}"{colon}')
        if kind in LITERALS and group not in _LITERAL_GROUPS:
            return None
        tokens += _slot(Leaf(group, inner_key, kind, (key, inner_key)))
    tokens.append("}")
    return tokens


def _top_leaf(key: str, value: object) -> Leaf | None:
    """The leaf of a top-level key's value, in the group its key gives, or None when the
    value is one this reader leaves to the record path."""
    kind = _kind(value)
    if kind is None:
        return None
    if key in ERROR_FIELDS:
        group = "error"
    elif key in JSON_KNOWN:
        group = key
    elif key.startswith(MFX_PREFIX):
        group = "ignored"  # never read: the reader drops our own annotations
    else:
        group = "extra"
    if kind in LITERALS and group not in _LITERAL_GROUPS:
        return None
    if kind != Kind.TEXT and group in _TEXT_GROUPS:
        return None
    return Leaf(group, key, kind, (key,))


def _slot(leaf: Leaf) -> list[str | Leaf]:
    """A value's tokens: a string between its quotes, a number alone."""
    return ['"', leaf, '"'] if leaf.kind == Kind.TEXT else [leaf]


def _pattern(token: str | Leaf) -> str:
    if isinstance(token, Leaf):
        return SLOTS[token.kind]
    return _literal(token)


def _placed(tokens: list[str | Leaf]) -> tuple[tuple[Leaf, ...], int]:
    """The leaves with their place in a line split at '"', and how many pieces it has."""
    piece, length = 0, 0  # the current piece, and how long it is so far
    leaves: list[Leaf] = []
    open_number: Leaf | None = None  # a number whose piece has not ended yet
    for token in tokens:
        if isinstance(token, Leaf):
            if token.kind == Kind.TEXT:
                leaves.append(Leaf(token.group, token.key, token.kind, token.path, piece))
            else:
                open_number = Leaf(token.group, token.key, token.kind, token.path, piece, length)
                length = 0
            continue
        for char in token:
            if char != '"':
                length += 1
                continue
            if open_number is not None:
                leaves.append(replace(open_number, stop=-length if length else None))
                open_number = None
            piece, length = piece + 1, 0
    if open_number is not None:
        leaves.append(replace(open_number, stop=-length if length else None))
    return tuple(leaves), piece + 1


def _kind(value: object) -> Kind | None:
    """The kind of a value this reader takes, or None."""
    if type(value) is str:
        return Kind.TEXT if plain(value) else None
    if type(value) is int:
        return Kind.INT
    if type(value) is float or type(value) is JsonNumber:  # no exponent: the slot holds none
        text = repr(value)  # a JsonNumber's: its text
        return Kind.INT if "e" not in text and "E" not in text and "n" not in text else None
    if type(value) is bool:
        return Kind.BOOL
    return Kind.NULL if value is None else None


LITERALS = (Kind.BOOL, Kind.NULL)


def plain(text: str) -> bool:
    """Written by json.dumps as itself in quotes (no escape, no control character)."""
    return _UNPLAIN.search(text) is None


_UNPLAIN = re.compile(r'["\\\x00-\x1f]')
# ASCII but letters, digits and "_", as RE2 hex escapes (`_literal`)
_ESCAPED = {
    code: f"\\x{{{code:x}}}" for code in range(0x80) if not (chr(code).isalnum() or code == 0x5F)
}


def _literal(text: str) -> str:
    """`text` as an RE2 literal (ASCII punctuation as hex escapes, the rest as is)."""
    return text.translate(_ESCAPED)
