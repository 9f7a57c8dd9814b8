"""A JSON array read into batches of columns as JSON Lines are: its elements split by Arrow.

Writers of arrays put the same text between every two elements: "},{" (minified), "}, {"
(`json.dumps` of a list), "},\n{" (one element a line, as our writer and most that stream an
array write), "},\n  {" (pretty-printed). That text is found once, after the first element,
and the array is split at it, a block of bytes at a time; each piece, with the blanks and the
comma after it, is an element's text, read by `jsonlread.JsonlBatches` as a JSON Lines line is:
matched to the layouts most rows share, by Arrow, most without `json.loads` (pretty-printed
elements without their line breaks and indents: `Elements.matchable`). Before, every
element was decoded into a record and the records into columns: 1M `varied` rows took 24.6 s,
against 4.7 s as JSON Lines.

A piece qualifies when RE2 finds it is one JSON object of plain values (keys and strings
without escapes, quotes or control characters; numbers without exponent; true, false, null;
objects of those one level deep, a payload) followed by blanks, ",", blanks. Such a piece is
one whole element, its extent the array reader's: a cut inside a string would leave an odd
number of quotes, which no qualifying piece has, and a cut inside a nested array leaves a
bracket, which none holds. It decodes without a refusal but for a key named twice; a piece no
layout matches is read by `jsonrecords.element_record`, which reads it as the array reader
does (refusing such a key, a float past a float's range, or a number too long to read).

The first piece that does not qualify (the last element, which no comma follows; an element
with an array or an escape; a separator spelled another way; a block that is not UTF-8; an
element over 1 MB) hands the rest of the stream, from that element's first byte, to the array
reader (`jsonarraystream`), in the state it would be in there: inside the array, after so many
items and a comma. A file that does not start as "[" and an object, or holds no separator in
its first 256 KB, is read by the array reader from its start. What it reads, refuses or fails,
it reads, refuses or fails as it always did.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from functools import partial
from typing import Any, BinaryIO, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.batchbounds import record_batches
from remediation.core.column import Ahead
from remediation.core.columns import Batch
from remediation.core.jsonllines import LINE_BLOCK_BYTES, Lines
from remediation.core.jsonlread import JsonlBatches
from remediation.jsonarraystream import MAX_JSON_ELEMENT_CHARS
from remediation.jsonreaders import Replay
from remediation.jsonrecords import JsonArrayRecords, array_records, element_record
from remediation.limits import json_depth_over
from remediation.records import UsageRecord

_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n"  # JSON's
_BLANK = "[ \\t\\r\\n]*"
_BREAKS = frozenset(b"\r\n\t")
_BREAK = "[\\r\\n\\t][ \\t\\r\\n]*"
# Where one element ends and the next starts (found once; that text then splits the array)
_SEPARATOR = re.compile(rb"\}[ \t\r\n]*,[ \t\r\n]*\{")
_STRING = '"[^"\\\\\\x00-\\x1f]*"'
_PLAIN = f"(?:{_STRING}|-?(?:0|[1-9][0-9]*)(?:\\.[0-9]+)?|true|false|null)"


def _object(value: str) -> str:
    pair = f"{_STRING}{_BLANK}:{_BLANK}{value}"
    return f"\\{{{_BLANK}(?:{pair}(?:{_BLANK},{_BLANK}{pair})*)?{_BLANK}\\}}"


# One element but the last: an object of plain values and objects of them, then ",".
ELEMENT = f"^{_object(f'(?:{_PLAIN}|{_object(_PLAIN)})')}{_BLANK},{_BLANK}$"
_NESTED = '{"a":{"b":1}}'  # the deepest a qualifying element is


def json_array_batches(
    records: JsonArrayRecords, size: int, record_rows: int, ahead: Ahead | None = None
) -> Iterator[Batch]:
    """The rows of a JSON array as batches: of at most `size` rows while its elements
    qualify, then of at most `record_rows` records, from the array reader."""
    depth = records.depth
    with records.text() as text:
        elements = Elements(cast(BinaryIO, text.buffer), depth)
        record = partial(element_record, depth=depth)
        source, matchable = iter(elements), elements.matchable
        yield from JsonlBatches(
            None, depth, size, ahead, source=source, record=record, matchable=matchable
        )
        yield from record_batches(elements.rest(), record_rows)


class Elements:
    """The elements of a JSON array as `Lines` (each element's text, the blanks around it and
    the comma after it stripped), while they qualify; `rest` then reads the rest of the
    stream."""

    def __init__(self, stream: BinaryIO, depth: int) -> None:
        self.stream, self.depth = stream, depth
        self.items = 0  # items read here
        # what the array reader reads: these bytes, then the stream; None: nothing is left
        self.left: bytes | None = b""
        self.opened = False  # `left` starts inside the array, after `items` items and a comma
        self.bom = False  # `left` is the stream's start, where a BOM is dropped
        self.broken = False  # the elements hold line breaks (pretty-printed): see `matchable`

    def __iter__(self) -> Iterator[Lines]:
        opening = self._opening()
        if opening is not None:
            yield from self._element_blocks(*opening)

    def _opening(self) -> tuple[bytes, bytes] | None:
        """The bytes after the array's "[" and the separator between its elements, when the
        array starts as expected (its elements are then read here); None: the array reader
        reads it all, from `left`."""
        data = b""
        while len(data) < LINE_BLOCK_BYTES and (chunk := self.stream.read(LINE_BLOCK_BYTES)):
            data += chunk
        if data[:3] == _BOM:
            data = data[3:]
        elif data[:1] == _BOM[:1]:  # a BOM cut short, or a character that is not "["
            self.left, self.bom = data, True
            return None
        self.left = data  # unless the array starts as expected: the array reader reads it all
        head = data.lstrip(_WHITESPACE)
        first = head[1:].lstrip(_WHITESPACE)
        found = _SEPARATOR.search(first)
        if head[:1] != b"[" or first[:1] != b"{" or found is None:
            return None
        if json_depth_over(_NESTED, self.depth):
            return None
        separator = found.group()  # "},{", "}, {", "},\n{"...: the first found, then taken as
        # the only one (an element followed by another does not qualify, and is handed over)
        self.broken = any(byte in _BREAKS for byte in first[: found.start()])
        self.opened, self.left = True, None
        return first, separator

    def _element_blocks(self, pending: bytes, separator: bytes) -> Iterator[Lines]:
        """The qualifying elements from `pending` on, a block at a time, until one does not
        qualify or the array ends (what is left then is `left`)."""
        while True:
            chunk = self.stream.read(LINE_BLOCK_BYTES)
            data = pending + chunk if pending else chunk
            cut = data.rfind(separator)
            if cut < 0:  # the last element and the end, or a long element
                if chunk and len(data) <= 4 * LINE_BLOCK_BYTES:
                    pending = data
                    continue
                self.left = data
                return
            # the elements, each with the separator after it but its last "{"
            block, pending = data[: cut + len(separator) - 1], data[cut + len(separator) - 1 :]
            texts, taken = self._elements(block, separator)
            if len(texts):
                numbers = list(range(self.items + 1, self.items + 1 + len(texts)))
                self.items += len(texts)
                yield Lines(numbers, texts, {})
            if taken < len(block):  # from an element that does not qualify
                self.left = block[taken:] + pending
                return

    def _elements(self, block: bytes, separator: bytes) -> tuple[pa.Array, int]:
        """The texts of the qualifying elements `block` starts with (each followed in the
        block by `separator` but its "{"), and the bytes of the block they take."""
        empty = pa.array([], pa.string())
        if not block.isascii():
            try:
                block.decode("utf-8")
            except UnicodeDecodeError:
                return empty, 0
        whole = pa.Array.from_buffers(
            pa.string(),
            1,
            [None, pa.py_buffer(np.array([0, len(block)], np.int32)), pa.py_buffer(block)],
        )
        # where each element starts: right after a separator but its "{" (the last
        # separator, which ends the block, has none: no piece starts after it)
        pieces: pa.Array = pc.list_flatten(pc.split_pattern(whole, separator.decode()))
        ends = np.frombuffer(pieces.buffers()[1], np.int32)
        lengths = np.diff(ends[pieces.offset : pieces.offset + len(pieces) + 1])
        starts = np.empty(len(pieces) + 1, np.int32)
        starts[0], starts[-1] = 0, len(block)
        starts[1:-1] = np.cumsum(lengths[:-1] + len(separator)) - 1
        elements = pa.Array.from_buffers(
            pa.string(), len(pieces), [None, pa.py_buffer(starts), pa.py_buffer(block)]
        )
        fits = np.diff(starts) < MAX_JSON_ELEMENT_CHARS
        fits &= _mask(pc.match_substring_regex(elements, ELEMENT))
        stops = np.flatnonzero(~fits)
        count = int(stops[0]) if len(stops) else len(elements)
        taken = int(starts[count])
        if not count:
            return empty, taken
        texts = elements.slice(0, count)
        return pc.replace_substring_regex(texts, f"{_BLANK},{_BLANK}$", ""), taken

    def matchable(self, texts: pa.Array) -> pa.Array:
        """The texts without their line breaks and the blanks after each (indents), when the
        elements are pretty-printed: the same JSON as `json.dumps(indent=...)` spells it
        without them, which layouts match (1M rows: 15.9 s decoded one by one, 6.9 s so). No
        line break, tab or CR is inside a qualifying element's strings (they hold no control
        character), so each is between values, as the blanks after it are."""
        return pc.replace_substring_regex(texts, _BREAK, "") if self.broken else texts

    def rest(self) -> Iterator[UsageRecord]:
        """The records of what was not read as elements, read by the array reader."""
        if self.left is None:
            return
        left, self.left = self.left, None
        replayed = io.BufferedReader(Replay(left, self.stream))
        encoding = "utf-8-sig" if self.bom else "utf-8"
        text = io.TextIOWrapper(replayed, encoding=encoding, newline="")
        try:
            yield from array_records(text, self.depth, self.items if self.opened else None)
        finally:
            text.detach()


def _mask(flags: pa.Array) -> np.ndarray[Any, Any]:
    return np.asarray(flags.to_numpy(zero_copy_only=False), bool)
