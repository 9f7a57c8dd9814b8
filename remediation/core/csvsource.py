"""A CSV stream's bytes for `csvread.CsvColumns`: read ahead, the bytes before a block kept, and
the text csv.reader reads when it takes over, decoded in io.TextIOWrapper's chunks from byte 0
(the same characters, and an undecodable byte's offset the same as today's reader gives).
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from remediation.csvtext import open_at_end

TEXT_CHUNK = 8192  # bytes io.TextIOWrapper decodes at a time (its _CHUNK_SIZE)
_KEEP_BEHIND = TEXT_CHUNK + 4  # bytes before a block the exact path re-decodes from


class ByteSource:
    """A binary stream read ahead into `pending` (which starts at byte `start`), keeping the
    last bytes before it in `behind`: a fallback re-decodes from a chunk start behind it."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.pending, self.behind = b"", b""
        self.start = 0
        self.eof = False

    def fill(self, size: int) -> bytes:
        """`pending` after reading ahead until it holds `size` bytes or the stream ends."""
        parts, have = [self.pending], len(self.pending)
        while have < size and not self.eof:
            part = self.stream.read(size - have)
            self.eof = not part
            parts.append(part)
            have += len(part)
        if len(parts) > 1:
            self.pending = b"".join(parts)
        return self.pending

    def take(self, size: int) -> bytes:
        taken = self.pending[:size]
        self.skip(size)
        return taken

    def skip(self, size: int) -> None:
        """`take` without a copy of what is taken (a block's bytes, parsed already)."""
        size = min(size, len(self.pending))
        tail = self.pending[max(0, size - _KEEP_BEHIND) : size]
        self.behind = (self.behind + tail)[-_KEEP_BEHIND:]
        self.pending = self.pending[size:]
        self.start += size

    def read(self, size: int) -> bytes:
        """Exactly `size` bytes unless the stream ends, as BytesIO.read1 gives io.TextIOWrapper."""
        self.fill(size)
        return self.take(size)


def exact_lines(source: ByteSource) -> Iterator[str]:
    """The lines `text_stream` gives csv.reader from byte `source.start` on (a line start),
    each once the next is read, as `closed_at_end` hands them over: a byte that does not decode
    at the end of the file then fails the file before its header is judged, as today (an
    ambiguous header before it was said instead)."""
    return _one_ahead(_lines(_decoded(source)))


def _one_ahead(lines: Iterator[str]) -> Iterator[str]:
    """`lines`, each yielded once the next was read (or the end reached)."""
    last = next(lines, None)
    if last is None:
        return
    for line in lines:
        yield last
        last = line
    yield last


def _decoded(source: ByteSource) -> Iterator[str]:
    """Text from byte `source.start` on, decoded in io.TextIOWrapper's chunks (from byte 0), so
    an undecodable byte raises with the offset today's reader gives."""
    at, behind = source.start, source.behind
    chunk = at - at % TEXT_CHUNK
    origin = chunk  # where the character running into the chunk starts (bytes before are valid)
    while origin < at and 0x80 <= behind[origin - at + len(behind)] < 0xC0:
        origin -= 1
    before = behind[len(behind) - (at - origin) :] if at > origin else b""
    encoding = "utf-8-sig" if origin == 0 else "utf-8"
    decoder = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder(encoding)(), False)
    skip = len(before.decode(encoding))
    decoder.decode(before[: chunk - origin])
    piece = before[chunk - origin :] + source.read(TEXT_CHUNK - (at - chunk))
    while piece:
        text = decoder.decode(piece)
        text, skip = text[skip:], max(0, skip - len(text))
        yield text
        piece = source.read(TEXT_CHUNK)
    yield decoder.decode(b"", True)


def _lines(pieces: Iterable[str]) -> Iterator[str]:
    """Text split as io.TextIOWrapper(newline="") splits it: after \\n, \\r or \\r\\n."""
    held: list[str] = []
    for piece in pieces:
        held.append(piece)
        if "\n" not in piece and "\r" not in piece:
            continue
        lines = io.StringIO("".join(held), newline="").readlines()
        held = [] if lines[-1].endswith(("\n", "\r")) else [lines.pop()]
        yield from lines
    if rest := "".join(held):
        yield open_at_end(rest)
