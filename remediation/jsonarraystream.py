"""The streaming parser of a JSON array: its elements decoded one at a time.

A JSON array is decoded one element at a time with `json.JSONDecoder.raw_decode` over 64 KiB
chunks. An element is read up to `limits.MAX_LINE_CHARS`; its nesting is measured on its
text (its extent is known only once decoded; an element the decoder's own recursion guard
stops is measured by its brackets and refused, one row like any other), and it is refused
as a JSON line is (`jsonvalues`). Apart because it yields values, not records
(`jsonrecords` makes them rows).
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from remediation.errors import UnreadableFile
from remediation.jsonnumbers import json_float, json_int
from remediation.jsonvalues import (
    LONE_SURROGATE,
    SURROGATE_ESCAPE,
    NotJsonNumber,
    decode_error,
    duplicate_key,
    lone_surrogate,
    record_keys,
    too_many_keys,
)
from remediation.limits import MAX_LINE_CHARS, json_depth_over, json_value_end

CHUNK_CHARS = 64 * 1024
MAX_JSON_ELEMENT_CHARS = MAX_LINE_CHARS

_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]*)?")


@dataclass(frozen=True, slots=True)
class Refused:
    """A JSON array element that was read but is not a usable value (and why)."""

    raw: str
    reason: str


class JsonArrayStream:
    """A window over the text: `buf[pos:]` is what has not been consumed yet."""

    def __init__(self, text: io.TextIOWrapper | None, depth: int) -> None:
        # None: no stream, `buf` holds the text whole (`element_record`)
        self.text, self.buf, self.pos, self.depth = text, "", 0, depth
        # Reads the numbers JSON does not have, noting the first (`odd`): the element is
        # refused whole once its extent is known (`checked`).
        self.decoder = json.JSONDecoder(parse_float=self._float, parse_constant=self._constant)
        self._signed: json.JSONDecoder | None = None  # the same, `-0` kept (`signed`)
        self.odd: str | None = None

    def _float(self, text: str) -> float:
        value = json_float(text)
        if not math.isfinite(value):
            self._constant(text)
        return value

    def _constant(self, text: str) -> float:
        self.odd = self.odd or text
        return 0.0

    def fill(self, size: int | None = None) -> bool:
        if self.text is None:
            return False
        chunk = self.text.read(size or CHUNK_CHARS)
        self.buf, self.pos = self.buf[self.pos :] + chunk, 0
        return bool(chunk)

    def fill_more(self) -> bool:
        """`fill` for an element not yet whole: as much again as is held of it (at least a
        chunk, not past the element bound), so that decoding it again from its start as more
        comes in costs time in its length (a chunk at a time, in its square: a 12 MB element
        took 27 s, as a JSON line 3 s)."""
        held = len(self.buf) - self.pos
        return self.fill(max(CHUNK_CHARS, min(held, MAX_JSON_ELEMENT_CHARS + 1 - held)))

    def peek(self) -> str:
        """Next non-blank character ("" at end of input)."""
        while True:
            buf, pos = self.buf, self.pos
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            self.pos = pos
            if pos < len(buf):
                return buf[pos]
            if not self.fill():
                return ""

    def items(self, after: int | None = None) -> Iterator[tuple[int, object]]:
        """(item number, value) of each element; `after`: the text starts inside the array,
        after that many items and the comma that follows the last (0: right after "[")."""
        if after is None:
            first = self.peek()
            if first == "":
                return
            if first != "[":
                raise UnreadableFile("JSON file is not an array (expected '[')")
            self.pos += 1
        number, expect_value = after or 0, True
        while True:
            char = self.peek()
            if char == "":
                raise UnreadableFile("JSON array is not closed (file truncated?)")
            if char == "]" and (expect_value is False or number == 0):
                self.pos += 1
                self.expect_end()
                return
            if char == ",":
                if expect_value:
                    raise UnreadableFile(f"JSON array: missing item after item {number}")
                self.pos, expect_value = self.pos + 1, True
                continue
            if not expect_value:
                raise UnreadableFile(f"JSON array: expected ',' after item {number}")
            number += 1
            expect_value = False
            yield number, self.decode(number)

    def decode(self, number: int) -> object:
        while True:
            self.odd = None
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if len(self.buf) - self.pos > MAX_JSON_ELEMENT_CHARS:
                    if self._closed():  # it ends within the bound: no more text makes it JSON
                        raise UnreadableFile(self._invalid(number, exc)) from exc
                    raise UnreadableFile(
                        f"item {number} is longer than {MAX_JSON_ELEMENT_CHARS} characters"
                    ) from exc
                if not self.fill_more():
                    raise UnreadableFile(self._invalid(number, exc)) from exc
                continue
            except RecursionError:  # the decoder's own guard, far past `depth`
                return self.refused(number, f"is nested deeper than {self.depth} levels")
            except ValueError:  # int() refuses a number of more than 4300 digits
                return self.refused(number, "holds a number too long to read (thousands of digits)")
            if end == len(self.buf) and self.fill():
                continue  # a bare number may go on in the next chunk: decode again
            start, self.pos = self.pos, end
            if self.holds_minus_zero(start, end):
                value = self.signed().raw_decode(self.buf, start)[0]
            return self.checked(value, start, end)

    def _closed(self) -> bool:
        """Whether the object or array at `pos` closes in the text read so far: a decoding
        error in it is no want of text (a NUL in item 4 of a large file was reported as item 4
        being longer than 16 MiB). Asked only at the element bound: scanned each time more
        text came, an element of 2 MB cost 0.15 s (50 of them: 0.9 -> 8 s)."""
        return self.buf[self.pos] in "[{" and json_value_end(self.buf, self.pos) is not None

    def _invalid(self, number: int, exc: json.JSONDecodeError) -> str:
        """Why item `number` is no JSON (the decoder's message alone ended in a dangling
        "at", its place left out: "Invalid control character at")."""
        return f"invalid JSON in item {number}: {decode_error(exc)}"

    def holds_minus_zero(self, start: int, end: int) -> bool:
        """`jsonnumbers.may_hold_minus_zero` of the element's text, not copied out."""
        buf = self.buf
        return buf.find("-", start, end) >= 0 and buf.find("-0", start, end) >= 0

    def signed(self) -> json.JSONDecoder:
        """`decoder`, every integer read by `json_int` (`-0` kept): decoded again with it is
        only an element whose text may hold `-0`."""
        if self._signed is None:
            self._signed = json.JSONDecoder(
                parse_float=self._float, parse_constant=self._constant, parse_int=json_int
            )
        return self._signed

    def refused(self, number: int, why: str) -> Refused:
        """The element the decoder gave up on (nested past its recursion limit, far past
        `depth`, or holding a number int() will not read), refused as one row, as JSON Lines
        refuse its line: its extent found by its brackets (a bare number: its characters),
        the stream read on past it. Only an element longer than an element may be, or a file
        that ends inside one, fails the file."""
        while (end := self._extent()) is None:
            if len(self.buf) - self.pos > MAX_JSON_ELEMENT_CHARS:
                raise UnreadableFile(
                    f"item {number} is longer than {MAX_JSON_ELEMENT_CHARS} characters"
                )
            if not self.fill_more():
                if self.buf[self.pos] in "[{":
                    raise UnreadableFile(
                        f"invalid JSON in item {number}: an array or object not closed"
                    )
                end = len(self.buf)  # a bare number at the end of the text
                break
        start, self.pos = self.pos, end
        return Refused(self.buf[start:end], f"element {why}")

    def _extent(self) -> int | None:
        """Where the element at `pos` ends, or None when the text read so far may end first."""
        buf, pos = self.buf, self.pos
        if buf[pos] in "[{":
            return json_value_end(buf, pos)
        found = _NUMBER.match(buf, pos)
        end = found.end() if found else pos + 1
        return end if end < len(buf) else None

    def checked(self, value: object, start: int, end: int) -> object:
        """`value`, or `Refused` when its text nests too deep or names a key twice. A
        refused element is kept whole, as a refused JSON line is (its extent is bounded by
        MAX_JSON_ELEMENT_CHARS): cut to RAW_KEPT, what was left was no JSON to fix by hand."""
        buf = self.buf
        if self.odd is not None:
            reason = f"element {NotJsonNumber(self.odd).reason}"
            return Refused(buf[start:end], reason)
        brackets = buf.count("[", start, end) + buf.count("{", start, end)
        if brackets > self.depth and json_depth_over(buf[start:end], self.depth):
            reason = f"element is nested deeper than {self.depth} levels"
            return Refused(buf[start:end], reason)
        too_many = too_many_keys(value)
        if too_many is not None:
            return Refused(buf[start:end], f"element {too_many}")
        duplicate = duplicate_key(buf, start, end, record_keys(value))
        if duplicate is not None:
            reason = f"element names key {duplicate!r} twice in one object; nothing guessed"
            return Refused(buf[start:end], reason)
        if SURROGATE_ESCAPE.search(buf, start, end) and lone_surrogate(value):
            return Refused(buf[start:end], f"element {LONE_SURROGATE}")
        return value

    def expect_end(self) -> None:
        if self.peek() != "":
            raise UnreadableFile("unexpected data after the JSON array")
