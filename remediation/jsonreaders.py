"""The JSON Lines line reader, and the text streams the JSON readers share.

A JSON Lines stream is decoded and split into lines where `readline` would, a block of
`LINE_BLOCK_CHARS` at a time; a line is read up to `limits.MAX_LINE_CHARS` (a longer one is
refused, only its first `RAW_KEPT` characters held). A line is trimmed of JSON's whitespace
(space, tab, line feed, carriage return) alone: a Unicode space at its end (NBSP, U+3000) is
part of what was written, kept in a line quarantined as written. Apart from the other JSON
modules because `core.jsonllines` splits plain blocks itself by these bounds and hands the
rest of a stream (through `Replay`) to `jsonl_line_blocks`; what a line's text becomes is
`jsonvalues`' and `jsonrecords`' business.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from remediation.limits import MAX_LINE_CHARS as MAX_LINE_CHARS  # core.jsonllines reads it here

LINE_BLOCK_CHARS = 1 << 18  # JSON Lines text read at once
RAW_KEPT = 1024  # characters of an unreadable line kept in its quarantined row
JSON_SPACE = " \t\r\n"  # what JSON calls whitespace (RFC 8259), all a line is trimmed of


def text_stream(stream: BinaryIO) -> io.TextIOWrapper:
    """UTF-8 text over a binary stream; a leading BOM is dropped."""
    return io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")


class Replay(io.RawIOBase):
    """`data`, then what is left of `stream` (which is not closed with this)."""

    def __init__(self, data: bytes, stream: BinaryIO) -> None:
        self._data, self._at, self._stream = data, 0, stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._at < len(self._data):
            taken = self._data[self._at : self._at + len(buffer)]
            buffer[: len(taken)] = taken
            self._at += len(taken)
            return len(taken)
        read = self._stream.read(len(buffer))
        buffer[: len(read)] = read
        return len(read)


def release(text: io.TextIOWrapper) -> None:
    """Hand the binary stream back to its owner, unless the owner closed it already (a reader
    abandoned by an exception is finalized late; it must not raise a second error then)."""
    try:
        if not text.buffer.closed:
            text.detach()
    except ValueError:
        pass  # already detached


def jsonl_lines(text: io.TextIOWrapper) -> Iterator[tuple[int, str, str | None]]:
    """(row number, stripped line, None) for each non-blank line, or (number, its first
    `RAW_KEPT` characters, why it is refused) for a line too long to be held."""
    for block in jsonl_line_blocks(text):
        for at, (number, line) in enumerate(zip(block.numbers, block.lines, strict=True)):
            yield number, line, block.refused.get(at)


@dataclass
class LineBlock:
    """Non-blank lines of a block of text: their row numbers, the lines stripped, and why a
    line was refused, by its place in the block (it then holds its first `RAW_KEPT`
    characters)."""

    numbers: list[int]
    lines: list[str]
    refused: dict[int, str]


def jsonl_line_blocks(text: io.TextIOWrapper, first: int = 0) -> Iterator[LineBlock]:
    """`jsonl_lines` a block of text at a time (`first`: the row number before the text's
    first line, when the text is the rest of a stream whose lines were read another way)."""
    number = first
    for short, lines in _raw_lines(text):
        if short:  # no line is too long: the common case, on whole lists
            cleaned = [line.strip(JSON_SPACE) for line in short]
            kept = cleaned if all(cleaned) else [line for line in cleaned if line]
            if kept:
                yield LineBlock(list(range(number + 1, number + 1 + len(kept))), kept, {})
                number += len(kept)
            continue
        block = LineBlock([], [], {})
        for head, length in lines:
            stripped = head.strip(JSON_SPACE)
            if not stripped:
                continue
            number += 1
            if length > MAX_LINE_CHARS:
                too_long = f"line is {length} characters long; at most {MAX_LINE_CHARS} are read"
                block.refused[len(block.lines)] = too_long
                stripped = stripped[:RAW_KEPT]
            block.numbers.append(number)
            block.lines.append(stripped)
        if block.lines:
            yield block


_BREAK = re.compile("(\r\n|\r|\n)")


def _raw_lines(text: io.TextIOWrapper) -> Iterator[tuple[list[str], list[tuple[str, int]]]]:
    """The lines of `text` as `readline` splits them (at "\n", "\r" or "\r\n"), a block
    at a time: either the lines alone (every one short: the common case), or each line as
    (the line with its terminator, cut after MAX_LINE_CHARS + 1 characters; its whole length).
    A line longer than that is never held whole: only its start is kept."""
    head, length = "", 0  # the unfinished line: its start, and its length so far
    keep = MAX_LINE_CHARS + 1
    while block := text.read(LINE_BLOCK_CHARS):
        if block[-1] == "\r":
            block += text.read(1)  # "\r\n" is one terminator, however the blocks fall
        if length and len(head) == length < LINE_BLOCK_CHARS:  # a short unfinished line
            block, head, length = head + block, "", 0
        if "\r" not in block and not length:
            pieces = block.split("\n")
            rest = pieces.pop()
            if not pieces or max(map(len, pieces)) < MAX_LINE_CHARS:
                if pieces:
                    yield pieces, []
                if rest:
                    head, length = rest[:keep], len(rest)
                continue
            parts = [x for piece in pieces for x in (piece, "\n")] + [rest]
        else:
            parts = _split_parts(block)
        lines, head, length = _measured(parts, head, length, keep)
        if lines:
            yield [], lines
    if length:
        yield [], [(head, length)]


def _split_parts(block: str) -> list[str]:
    """A block's lines and their terminators, alternating, and its unfinished rest last."""
    if "\r" in block:
        return _BREAK.split(block)
    pieces = block.split("\n")
    parts = [x for piece in pieces for x in (piece, "\n")]
    parts.pop()
    return parts


def _measured(
    parts: list[str], head: str, length: int, keep: int
) -> tuple[list[tuple[str, int]], str, int]:
    """The lines of `parts` (`_split_parts`), each cut after `keep` characters with its whole
    length, the first one ending the unfinished line (`head`, of `length` so far); and the
    unfinished line after them."""
    lines: list[tuple[str, int]] = []
    for at in range(0, len(parts) - 1, 2):
        content, end = parts[at], parts[at + 1]
        if length:
            whole = length + len(content) + len(end)
            if len(head) < keep:
                head = (head + content + end)[:keep]
            lines.append((head, whole))
            head, length = "", 0
        elif len(content) < keep:
            lines.append((content + end, len(content) + len(end)))
        else:
            lines.append(((content + end)[:keep], len(content) + len(end)))
    rest = parts[-1]
    if rest:
        if len(head) < keep:
            head = (head + rest)[:keep]
        length += len(rest)
    return lines, head, length
