"""A JSON array read into batches of columns as JSON Lines are, while it has one element a line.

Our own writer and most that stream an array write "[", then one element a line, each but the
last followed by ",", then "]". While a file is such, each element line is a row's text, read
by `jsonlread.JsonlBatches` as a JSON Lines line is: matched to the layouts most rows share, by
Arrow, most without `json.loads`. Before, every element was decoded into a record and the
records into columns: 1M `varied` rows took 24.6 s, against 4.7 s as JSON Lines.

An element line qualifies when Arrow (RE2) finds it holds one JSON object of plain values, with
blanks (space, tab, CR) around it, then ",": keys and strings without escapes or control
characters, numbers without exponent, true, false, null, and objects of those one level deep
(a payload). So it is one whole element, its extent the array reader's, and it decodes
without a refusal but for a key named twice; a line no layout matches is read by
`jsonreaders.element_record`, which reads it as the array reader does (refusing such a key, or
a float past a float's range, and failing the file on a number too long to read).

The first line that does not qualify (the last element, which has no ","; a pretty-printed
element; a long line; anything else) hands the rest of the stream, from that line's first
byte, to the array reader, in the state it would be in there: inside the array, after so many
items and a comma. So is a block that is not UTF-8 (the array reader fails the file on it), and
a file whose first line is not "[" alone: the array reader reads it from the start. What it
reads, refuses or fails, it reads, refuses or fails as it always did.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import partial
from typing import Any, BinaryIO, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.columns import Batch, from_records
from remediation.core.csvread import Ahead
from remediation.core.jsonllines import LINE_BLOCK_BYTES, Lines, Replay
from remediation.core.jsonlread import JsonlBatches
from remediation.jsonreaders import (
    MAX_JSON_ELEMENT_CHARS,
    JsonArrayRecords,
    array_records,
    element_record,
)
from remediation.limits import json_depth_over
from remediation.records import UsageRecord

_BOM = b"\xef\xbb\xbf"
_BLANK = "[ \\t\\r]*"
_STRING = '"[^"\\\\\\x00-\\x1f]*"'
_PLAIN = f"(?:{_STRING}|-?(?:0|[1-9][0-9]*)(?:\\.[0-9]+)?|true|false|null)"


def _object(value: str) -> str:
    pair = f"{_STRING}{_BLANK}:{_BLANK}{value}"
    return f"\\{{{_BLANK}(?:{pair}(?:{_BLANK},{_BLANK}{pair})*)?{_BLANK}\\}}"


# One element line, but the last: an object of plain values and objects of them, then ",".
ELEMENT_LINE = f"^{_BLANK}{_object(f'(?:{_PLAIN}|{_object(_PLAIN)})')}{_BLANK},{_BLANK}$"
_NESTED = '{"a":{"b":1}}'  # the deepest element a qualifying line holds


def json_array_batches(
    records: JsonArrayRecords, size: int, record_rows: int, ahead: Ahead | None = None
) -> Iterator[Batch]:
    """The rows of a JSON array as batches: of at most `size` rows while its element lines
    qualify, then of at most `record_rows` records, from the array reader."""
    depth = records.depth
    with records.text() as text:
        lines = ElementLines(cast(BinaryIO, text.buffer), depth)
        record = partial(element_record, depth=depth)
        yield from JsonlBatches(None, depth, size, ahead, source=iter(lines), record=record)
        chunk: list[UsageRecord] = []
        for row in lines.rest():
            chunk.append(row)
            if len(chunk) >= record_rows:
                yield from_records(chunk)
                chunk = []
        if chunk:
            yield from_records(chunk)


class ElementLines:
    """The element lines of a JSON array as `Lines` (each element's text, blanks and comma
    stripped), until one does not qualify; `rest` then reads the rest of the stream."""

    def __init__(self, stream: BinaryIO, depth: int) -> None:
        self.stream, self.depth = stream, depth
        self.items = 0  # items read as lines
        # what the array reader reads: these bytes, then the stream; None: nothing is left
        self.left: bytes | None = b""
        self.opened = False  # the "[" was read as a line: `left` starts inside the array
        self.bom = False  # `left` is the stream's start, where a BOM is dropped

    def __iter__(self) -> Iterator[Lines]:
        data = b""
        while b"\n" not in data and len(data) <= LINE_BLOCK_BYTES:  # the first line, whole
            chunk = self.stream.read(LINE_BLOCK_BYTES)
            if not chunk:
                break
            data += chunk
        if data[:3] == _BOM:
            data = data[3:]
        elif data[:1] == _BOM[:1]:  # a BOM cut short by the read, or a character
            self.left, self.bom = data, True
            return
        opening = data.find(b"\n")
        if (
            opening < 0
            or data[:opening].strip(b" \t\r") != b"["
            or json_depth_over(_NESTED, self.depth)
        ):
            self.left = data  # the array reader reads it all
            return
        self.opened = True
        pending = data[opening + 1 :]
        while True:
            chunk = self.stream.read(LINE_BLOCK_BYTES)
            data = pending + chunk if pending else chunk
            cut = data.rfind(b"\n") + 1
            if not cut:  # no line ends in it: the end, or a long line
                if chunk and len(data) <= LINE_BLOCK_BYTES:
                    pending = data
                    continue
                self.left = data
                return
            block, pending = data[:cut], data[cut:]
            lines, taken = self._elements(block)
            if len(lines):
                numbers = list(range(self.items + 1, self.items + 1 + len(lines)))
                self.items += len(lines)
                yield Lines(numbers, lines, {})
            if taken < len(block):  # from a line that does not qualify
                self.left = block[taken:] + pending
                return

    def _elements(self, block: bytes) -> tuple[pa.Array, int]:
        """The texts of the qualifying lines `block` starts with (blank ones skipped), and
        the bytes of the block they take."""
        empty = pa.array([], pa.string())
        if not block.isascii():
            try:
                block.decode("utf-8")
            except UnicodeDecodeError:
                return empty, 0
        whole = pa.Array.from_buffers(
            pa.string(),
            1,
            [None, pa.py_buffer(np.array([0, len(block) - 1], np.int32)), pa.py_buffer(block)],
        )
        lines: pa.Array = pc.list_flatten(pc.split_pattern(whole, "\n"))
        offsets = np.frombuffer(lines.buffers()[1], np.int32)[
            lines.offset : lines.offset + len(lines) + 1
        ]
        fits = np.diff(offsets) < MAX_JSON_ELEMENT_CHARS
        fits &= _mask(pc.match_substring_regex(lines, ELEMENT_LINE))
        blank = _mask(pc.match_substring_regex(lines, f"^{_BLANK}$"))
        stops = np.flatnonzero(~(fits | blank))
        count = int(stops[0]) if len(stops) else len(lines)
        # the lines before the first that does not qualify, each with its "\n"
        taken = int(offsets[count] - offsets[0]) + count if count < len(lines) else len(block)
        kept = np.flatnonzero(fits[:count])
        if not len(kept):
            return empty, taken
        texts = lines.take(pa.array(kept)) if len(kept) < len(lines) else lines
        stripped = pc.replace_substring_regex(texts, f"{_BLANK},{_BLANK}$", "")
        return pc.utf8_ltrim(stripped, " \t\r"), taken

    def rest(self) -> Iterator[UsageRecord]:
        """The records of what the lines did not take, read by the array reader."""
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
