"""A document of pretty-printed JSON objects, read one object a line; UTF-16 text refused.

Every JSON stream passes here first (`jsonrecords`): its first bytes tell a document that is
not one value a line (`json.dumps(obj, indent=2)`, `jq .`), and text in UTF-16, which is
refused before it could be read as rows of NULs. Apart because it looks at bytes, before
any text is decoded.
"""

from __future__ import annotations

import io
import json
import re
from typing import BinaryIO

from remediation.errors import UnreadableFile
from remediation.filetypes import UTF16_BOMS, compressed
from remediation.jsonarraystream import CHUNK_CHARS
from remediation.jsonreaders import JSON_SPACE, MAX_LINE_CHARS, Replay

# A document of JSON objects, not one a line (`objects_document`): read whole up to this many
# bytes (the bound of one line or element), its first line looked at up to `CHUNK_CHARS`.
MAX_DOCUMENT_BYTES = MAX_LINE_CHARS
_UTF16_UNITS = 4  # characters in UTF-16 without a BOM that tell it (one NUL alone does not)
_BREAK_AND_INDENT = re.compile("[\r\n\t][ \t\r\n]*")
_BLANKS = re.compile(f"[{re.escape(JSON_SPACE)}]*")


def objects_document(stream: BinaryIO, array: bool) -> BinaryIO:
    """The stream to read: `stream` itself, from where it was; or, for a document of JSON
    objects that is not one object a line (pretty-printed: `json.dumps(obj, indent=2)`, or
    `jq .` of several), the same objects one a line (JSON Lines; `array`: as a JSON array,
    one element a line). Such a document starts with "{" and its first line is no JSON value
    alone; it is read whole (at most `MAX_DOCUMENT_BYTES`) and is taken only when it is JSON
    objects and blanks alone, each object starting and ending on lines of its own: one row
    each, its text with its line breaks and indents left out (outside strings, where alone
    JSON has them, they are blanks between tokens). Anything else (a truncated or broken
    object, two values on one line, a document past the bound) is read as it always was: a
    malformed row a line, each with its reason; no row is made up, none dropped.

    Text in UTF-16 is refused here as not UTF-8: without a BOM (which fails decoding at
    offset 0, as CSV and JSON Lines say) its ASCII characters are valid UTF-8, each beside a
    NUL byte, which no JSON text holds raw (read on, a line of it was a row of NULs)."""
    start = stream.tell() if stream.seekable() else None
    head = stream.read(CHUNK_CHARS)
    _refuse_utf16(head)
    body = head[3:] if head[:3] == b"\xef\xbb\xbf" else head
    if _first_line_open(body):
        rest = stream.read(MAX_DOCUMENT_BYTES + 1 - len(head))
        if len(head) + len(rest) <= MAX_DOCUMENT_BYTES:
            lines = _one_a_line(body + rest, array)
            if lines is not None:
                return io.BytesIO(lines)
        document = head + rest
    else:
        document = head
    if start is not None:
        stream.seek(start)
        return stream
    return io.BufferedReader(Replay(document, stream))


def utf16_refusal(head: bytes) -> str | None:
    """Why a file whose first bytes are `head` is refused as UTF-16 text, or None: its byte
    order mark, where UTF-8 decoding fails (what CSV and JSON Lines readers say of it), or,
    without one, its first `_UTF16_UNITS` characters each an ASCII byte beside a NUL byte, as
    UTF-16 spells them (a NUL alone is no such pattern: a line of JSON Lines holding one is a
    malformed row, as any line that is no JSON)."""
    if head[:2] in UTF16_BOMS:
        return compressed(head)
    units = head[: 2 * _UTF16_UNITS]
    if len(units) < 2 * _UTF16_UNITS:
        return None
    for nul, ascii_at in ((0, 1), (1, 0)):  # big-endian, little-endian
        if not any(units[nul::2]) and all(0 < byte < 0x80 for byte in units[ascii_at::2]):
            return (
                f"not UTF-8 text: a NUL byte at offset {nul}, as UTF-16 text has (save it as UTF-8)"
            )
    return None


def _refuse_utf16(head: bytes) -> None:
    """A BOM fails decoding at offset 0, where the text is decoded; a NUL fails here."""
    refusal = utf16_refusal(head)
    if refusal is not None and head[:2] not in UTF16_BOMS:
        raise UnreadableFile(refusal)


def _first_line_open(body: bytes) -> bool:
    """The text starts with "{" and its first line (which ends in `body`) is no JSON value
    alone."""
    text = body.lstrip(JSON_SPACE.encode())
    if text[:1] != b"{":
        return False
    ends = [at for at in (text.find(b"\n"), text.find(b"\r")) if at >= 0]
    if not ends:
        return False  # one line, or a first line longer than is looked at: read as it was
    try:
        json.loads(text[: min(ends)].decode("utf-8"))
    except (ValueError, RecursionError):
        return True
    return False


def _one_a_line(data: bytes, array: bool) -> bytes | None:
    """The JSON objects `data` holds, each on lines of its own, one a line (line breaks and
    indents left out; `array`: as a JSON array, one element a line); None when it holds
    anything else. Written as they are found: a list of millions of small objects' texts
    took ten times the document's size."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    decoder, pos, end = json.JSONDecoder(), 0, 0
    out = io.StringIO()
    out.write("[" if array else "")
    separator, objects = ",\n" if array else "\n", 0
    while True:
        blanks = _BLANKS.match(text, pos)  # not a copy of the rest of the text an object
        blank = blanks.end() if blanks else pos
        gap, pos = text[end:blank], blank
        if pos == len(text):
            break
        if objects and "\n" not in gap and "\r" not in gap:
            return None  # two values on one line
        if text[pos] != "{":
            return None
        try:
            end = decoder.raw_decode(text, pos)[1]
        except (ValueError, RecursionError):
            return None
        out.write(separator if objects else "")
        out.write(_BREAK_AND_INDENT.sub("", text[pos:end]))
        objects += 1
        pos = end
    if not objects:
        return None
    out.write("]\n" if array else "\n")
    return out.getvalue().encode()
