"""The lines of a JSON Lines stream as Arrow text, a block of bytes at a time.

The line reader (`jsonreaders.jsonl_line_blocks`) decodes the stream, splits it where
`readline` would ("\\n", "\\r", "\\r\\n"), strips each line of JSON's whitespace (space,
tab, carriage return, line feed: `jsonreaders.JSON_SPACE`), skips blank lines and refuses a
line longer than `MAX_LINE_CHARS`: all of it in Python, a string object per line, then
encoded again into Arrow (the bench's 1M `varied` lines: 1.1 s of the 4.5 s its batches took
to read, under cProfile; 0.45 s split here). Most files need nothing of that but the split.
Here a block of bytes that ends at a "\\n" is split by Arrow when the line reader would give
exactly those lines: the block is UTF-8 and holds no "\\r", no line is longer than the limit,
and no line starts or ends with a byte of JSON's whitespace (a Unicode space, U+00A0 or
U+3000, is not one: it stays in its line, as the line reader keeps it). Empty lines are
skipped, as the line reader skips them. The first block that is not such hands the rest of
the stream, from that block's first byte, to the line reader, which reads, refuses or fails
it as it always did (a byte that is not UTF-8 fails the file there).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation import jsonreaders

LINE_BLOCK_BYTES = 1 << 18  # bytes read at once (a block is cut at its last "\n")
_BOM = b"\xef\xbb\xbf"

# Bytes the line reader strips off a line's ends: JSON's whitespace (`jsonreaders.JSON_SPACE`)
_EDGE = np.zeros(256, bool)
_EDGE[list(jsonreaders.JSON_SPACE.encode())] = True


@dataclass(slots=True)
class Lines:
    """Non-blank lines: their row numbers, their text (stripped), and why a line was refused,
    by its place (it then holds its first `RAW_KEPT` characters)."""

    numbers: list[int]
    text: pa.Array  # string
    refused: dict[int, str]


def line_arrays(text: io.TextIOWrapper) -> Iterator[Lines]:
    """The lines `jsonreaders.jsonl_line_blocks(text)` reads, as Arrow text. `text` must not
    have been read from: its binary stream is read here."""
    stream = cast(BinaryIO, text.buffer)
    number, pending, first = 0, b"", True
    while True:
        chunk = stream.read(LINE_BLOCK_BYTES)
        data = pending + chunk if pending else chunk
        if first:
            first = False
            if data[:3] == _BOM:  # dropped, as "utf-8-sig" drops it
                data = data[3:]
            elif data[:1] == _BOM[:1]:  # a BOM cut short by the read, or a character
                yield from _rest(data, stream, number, bom=True)
                return
        if not data:
            if not chunk:
                return
            continue  # the read held the BOM alone
        if chunk:
            cut = data.rfind(b"\n") + 1
            if not cut:  # no line ends in it yet
                if len(data) > LINE_BLOCK_BYTES:  # a long line: the line reader bounds it
                    yield from _rest(data, stream, number)
                    return
                pending = data
                continue
            block, pending = data[:cut], data[cut:]
        else:
            block, pending = data + b"\n", b""  # the last line, which has no "\n"
        lines = _split(block)
        if lines is None:
            yield from _rest(data, stream, number)
            return
        if len(lines):
            yield Lines(list(range(number + 1, number + 1 + len(lines))), lines, {})
            number += len(lines)
        if not chunk:
            return


# A JSON string followed by ":" (a key, kept, with a separator after it), another string, or
# text between strings: left to right, every string is taken whole.
_KEY_OR_OTHER = r'("(?:[^"\\]|\\.)*")[ \t\r\n]*:|"(?:[^"\\]|\\.)*"|[^"]+'


def line_keys(lines: pa.Array) -> tuple[np.ndarray[Any, Any], list[frozenset[str]]]:
    """The keys each line names at any depth, as written (a line that is no JSON object: what
    reads as keys), for the cells of a batch (`batchbounds.cell_spans`): a place per line in the
    distinct key sets, and those sets."""
    named = pc.replace_substring_regex(lines, _KEY_OR_OTHER, "\\1\x00")
    encoded = pc.dictionary_encode(named)
    keys = [frozenset(text.split("\x00")) - {""} for text in encoded.dictionary.to_pylist()]
    return encoded.indices.to_numpy(zero_copy_only=False), keys


def _split(block: bytes) -> pa.Array | None:
    """The non-empty lines of `block` (which ends with "\\n"), or None when the line reader
    might read them otherwise."""
    if b"\r" in block:
        return None
    if not block.isascii():
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return None
    whole = pa.Array.from_buffers(
        pa.string(),
        1,
        [None, pa.py_buffer(np.array([0, len(block) - 1], np.int32)), pa.py_buffer(block)],
    )
    lines: pa.Array = pc.list_flatten(pc.split_pattern(whole, "\n"))
    _, offsets_buffer, data_buffer = lines.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32)[lines.offset : lines.offset + len(lines) + 1]
    lengths = np.diff(offsets)
    if len(lengths) and int(lengths.max()) + 1 > jsonreaders.MAX_LINE_CHARS:
        return None  # a character is at least a byte: no line is longer than its bytes
    full = np.flatnonzero(lengths)
    if not len(full):
        return lines.slice(0, 0)
    data = np.frombuffer(data_buffer, np.uint8)
    if _EDGE[data[offsets[full]]].any() or _EDGE[data[offsets[full + 1] - 1]].any():
        return None
    if len(full) < len(lines):
        return lines.take(pa.array(full))
    return lines


def _rest(data: bytes, stream: BinaryIO, number: int, bom: bool = False) -> Iterator[Lines]:
    """The lines of `data` and of the rest of `stream`, read by the line reader (`bom`: the
    data is the stream's start, where a BOM is dropped)."""
    replayed = io.BufferedReader(jsonreaders.Replay(data, stream))
    text = io.TextIOWrapper(replayed, encoding="utf-8-sig" if bom else "utf-8", newline="")
    try:
        for block in jsonreaders.jsonl_line_blocks(text, number):
            yield Lines(block.numbers, pa.array(block.lines, pa.string()), block.refused)
    finally:
        text.detach()
