"""Streaming readers for JSON (an array) and JSON Lines usage files.

A JSON array is decoded one element at a time with `json.JSONDecoder.raw_decode` over 64 KiB
chunks; JSON Lines line by line. A line or an element is read up to `limits.MAX_LINE_CHARS`;
its nesting is measured on the text before it is parsed (JSON Lines) or on the element's text
(an array, whose extent is known only once decoded; an element the decoder's own recursion
guard stops is measured by its brackets and refused, one row like any other). A key named
twice in one object is a malformed row: which value Stripe should get is unknowable, so
nothing is guessed. So is a number JSON does not have (`NaN`, `Infinity`, or one past a
float's range such as `1e999`): `json.loads` reads it as a float and `json.dumps` writes it
back as no JSON reader takes (Stripe's, PostgreSQL's), so it would reach a corrected file or
fail the database's insert. Every other number with a fraction or an exponent is read by
`jsonnumbers.json_float`: its text, as written, is what goes out again (a float's `repr` of
it would change a billed value unseen); so is the integer `-0` (`jsonnumbers.json_int`, for a
line or element whose text holds `-0` only). A line is trimmed of JSON's whitespace (space,
tab, line feed, carriage return) alone: a Unicode space at its end (NBSP, U+3000) is part of
what was written, kept in a line quarantined as written.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from remediation.errors import UnreadableFile, not_utf8
from remediation.filetypes import FileFormat
from remediation.jsonnumbers import json_float, json_int
from remediation.limits import MAX_LINE_CHARS as MAX_LINE_CHARS  # core.jsonllines reads it here
from remediation.limits import json_depth_over, json_value_end
from remediation.records import ERROR_FIELDS, MFX_PREFIX, UsageRecord, resolve_error

CHUNK_CHARS = 64 * 1024
LINE_BLOCK_CHARS = 1 << 18  # JSON Lines text read at once
MAX_JSON_ELEMENT_CHARS = MAX_LINE_CHARS
RAW_KEPT = 1024  # characters of an unreadable line kept in its quarantined row
# Keys a row may name, its own and its payload's (each one a column of its batch, worked on by
# every check and writer: a row of 1,000,000 ran for over 9 minutes, past 7 GB); a meter reads
# a few. Stripe publishes no bound: assumed, far above any usage row.
MAX_ROW_KEYS = 1000
JSON_SPACE = " \t\r\n"  # what JSON calls whitespace (RFC 8259), all a line is trimmed of


def text_stream(stream: BinaryIO) -> io.TextIOWrapper:
    """UTF-8 text over a binary stream; a leading BOM is dropped."""
    return io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")


def json_records(stream: BinaryIO, fmt: FileFormat, depth: int) -> Iterator[UsageRecord]:
    if fmt is FileFormat.JSONL:
        return JsonlRecords(stream, depth)
    return JsonArrayRecords(stream, depth)


class _JsonRecords(Iterator[UsageRecord]):
    """The records of a JSON stream, read lazily; or, through `text`, the stream for a reader
    of columns (`core.jsonlread`, `core.jsonarray`)."""

    _array = False  # the stream is read as a JSON array

    def __init__(self, stream: BinaryIO, depth: int) -> None:
        self._stream, self._depth = stream, depth
        self._records: Iterator[UsageRecord] | None = None

    def __next__(self) -> UsageRecord:
        if self._records is None:
            self._records = self._read_records()
        return next(self._records)

    def _read_records(self) -> Iterator[UsageRecord]:
        with self.text() as text:
            yield from self._records_of(text)

    def _records_of(self, text: io.TextIOWrapper) -> Iterator[UsageRecord]:
        raise NotImplementedError

    @property
    def depth(self) -> int:
        return self._depth

    @contextmanager
    def text(self) -> Iterator[io.TextIOWrapper]:
        """The stream as text, handed back after; bytes that are not UTF-8 fail the file
        (named by the offset of the first, in the file). A document of pretty-printed objects
        is handed out one object a line (`objects_document`)."""
        text = text_stream(objects_document(self._stream, self._array))
        try:
            yield text
        except UnicodeDecodeError as exc:
            raise not_utf8(self._stream) from exc
        finally:
            release(text)


class JsonlRecords(_JsonRecords):
    """The records of a JSON Lines stream (`core.jsonlread` reads them as columns)."""

    def _records_of(self, text: io.TextIOWrapper) -> Iterator[UsageRecord]:
        return _jsonl_records(text, self._depth)


class JsonArrayRecords(_JsonRecords):
    """The records of a JSON array (`core.jsonarray` reads them as columns)."""

    _array = True

    def _records_of(self, text: io.TextIOWrapper) -> Iterator[UsageRecord]:
        return array_records(text, self._depth)


# A document of JSON objects, not one a line (`objects_document`): read whole up to this many
# bytes (the bound of one line or element), its first line looked at up to `CHUNK_CHARS`.
MAX_DOCUMENT_BYTES = MAX_LINE_CHARS
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF16_UNITS = 4  # characters in UTF-16 without a BOM that tell it (one NUL alone does not)
_BREAK_AND_INDENT = re.compile("[\r\n\t][ \t\r\n]*")


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
            objects = _objects(body + rest)
            if objects is not None:
                return io.BytesIO(_one_a_line(objects, array))
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
    if head[:2] in _UTF16_BOMS:
        return "not UTF-8 text: undecodable byte at offset 0"
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
    if refusal is not None and head[:2] not in _UTF16_BOMS:
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


def _objects(data: bytes) -> list[str] | None:
    """The texts of the JSON objects `data` holds, each on lines of its own, line breaks and
    indents left out; None when it holds anything else."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    decoder, pos, end = json.JSONDecoder(), 0, 0
    objects: list[str] = []
    while True:
        blank = len(text) - len(text[pos:].lstrip(JSON_SPACE))
        gap, pos = text[end:blank], blank
        if pos == len(text):
            return objects or None
        if objects and "\n" not in gap and "\r" not in gap:
            return None  # two values on one line
        if text[pos] != "{":
            return None
        try:
            end = decoder.raw_decode(text, pos)[1]
        except (ValueError, RecursionError):
            return None
        objects.append(_BREAK_AND_INDENT.sub("", text[pos:end]))
        pos = end


def _one_a_line(objects: list[str], array: bool) -> bytes:
    if array:
        return ("[" + ",\n".join(objects) + "]\n").encode()
    return ("\n".join(objects) + "\n").encode()


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


def array_records(
    text: io.TextIOWrapper, depth: int, after: int | None = None
) -> Iterator[UsageRecord]:
    """The records of the elements of a JSON array, in order (`after`: the text starts inside
    the array, after that many items and the comma following the last; `core.jsonarray`
    hands a stream over so)."""
    items = _JsonArrayStream(text, depth).items(after)
    return (record_from_obj(n, obj) for n, obj in items)


def element_record(number: int, text: str, depth: int) -> UsageRecord:
    """The record of array item `number`, whose text (one whole JSON value, blanks stripped)
    is `text`: as the array reader reads it in the stream (a refusal the same)."""
    reader = _JsonArrayStream(None, depth)
    reader.buf = text
    return record_from_obj(number, reader.decode(number))


def release(text: io.TextIOWrapper) -> None:
    """Hand the binary stream back to its owner, unless the owner closed it already (a reader
    abandoned by an exception is finalized late; it must not raise a second error then)."""
    try:
        if not text.buffer.closed:
            text.detach()
    except ValueError:
        pass  # already detached


def record_from_obj(number: int, obj: object) -> UsageRecord:
    if isinstance(obj, _Refused):
        return unreadable(number, obj.raw, obj.reason)
    if not isinstance(obj, dict):
        return UsageRecord(
            number,
            None,
            None,
            None,
            {},
            {"element": obj},
            malformed=f"element is a JSON {_json_kind(obj)}, not an object",
        )
    problems: list[str] = []
    extra = {
        k: v
        for k, v in obj.items()
        if k not in JSON_KNOWN and k not in ERROR_FIELDS and not k.startswith(MFX_PREFIX)
    }
    payload = obj.get("payload")
    if payload is None:
        if "payload" in obj:  # null: written back so in a quarantined row (`record_object`)
            extra["payload"] = None
        payload = {}
    elif not isinstance(payload, dict):
        # kept as it came (`writers.record_object` writes it back), never read by a rule
        problems.append(f"payload is a JSON {_json_kind(payload)}, not an object")
        extra["payload"], payload = payload, {}
    timestamp = obj.get("timestamp")
    if timestamp is None and "timestamp" in obj:
        extra["timestamp"] = None  # null, as the payload's
    code, message = resolve_error({k: obj[k] for k in ERROR_FIELDS if k in obj})
    texts: dict[str, str | None] = {}
    for name in ("identifier", "event_name"):
        value = obj.get(name)
        if type(value) is str:  # the common case, first
            texts[name] = value or None
            continue
        # no text of it is the row's (Python's of `true` is `True`): kept as it came
        if isinstance(value, dict | list | bool):
            problems.append(f"{name} is a JSON {_json_kind(value)}, not text")
            extra[name], value = value, None
        elif isinstance(value, int | float):
            extra[name] = value  # read as its text; a quarantined row keeps the number
        elif name == "event_name" and name in obj:
            extra[name] = None  # null, as the payload's (a null identifier gets one made up)
        texts[name] = None if value is None else str(value)
    return UsageRecord(
        number,
        texts["identifier"],
        timestamp,
        texts["event_name"],
        dict(payload),
        extra,
        code,
        message,
        "; ".join(problems) or None,
    )


def _json_kind(value: object) -> str:
    """What JSON calls a parsed value's type."""
    if isinstance(value, bool) or value is None:
        return "boolean" if value is not None else "null"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict):
        return "object"
    return "list" if isinstance(value, list) else "string"


JSON_KNOWN = frozenset({"identifier", "timestamp", "event_name", "payload"})


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
        elif "\r" in block:
            parts = _BREAK.split(block)
        else:
            pieces = block.split("\n")
            parts = [x for piece in pieces for x in (piece, "\n")]
            parts.pop()
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
        if lines:
            yield [], lines
    if length:
        yield [], [(head, length)]


def _jsonl_records(text: io.TextIOWrapper, depth: int) -> Iterator[UsageRecord]:
    for number, line, too_long in jsonl_lines(text):
        if too_long is not None:
            yield unreadable(number, line, too_long)
            continue
        obj, refused = parse_line(line, depth)
        if refused is not None:
            yield unreadable(number, line, f"line {refused}")
            continue
        yield record_from_obj(number, obj)


def unreadable(number: int, raw: str, reason: str) -> UsageRecord:
    return UsageRecord(number, None, None, None, {}, {"raw": raw}, malformed=reason)


def parse_line(text: str, depth: int) -> tuple[object, str | None]:
    """(the JSON value, None), or (None, why it is refused): nesting is measured before the
    text is parsed; a key named twice in one object is ambiguous. The cheap tests come first:
    they run on every line."""
    if text.count("[") + text.count("{") > depth and json_depth_over(text, depth):
        return None, f"is nested deeper than {depth} levels"
    try:
        # `jsonnumbers.may_hold_minus_zero`, inlined: this runs on every line read here
        signed = "-" in text and "-0" in text
        obj = (_STRICT_SIGNED if signed else _STRICT).decode(text)
    except json.JSONDecodeError as exc:
        return None, f"is not JSON: {exc.msg}"
    except _NotJsonNumber as exc:
        return None, exc.reason
    except RecursionError:
        return None, f"is nested deeper than {depth} levels"
    except ValueError:  # int() refuses a number of more than 4300 digits
        return None, "holds a number too long to read (thousands of digits)"
    too_many = _too_many_keys(obj)
    if too_many is not None:
        return None, too_many
    keys = _keys(obj)
    if text.count(":") > keys:  # else no key was named twice: see `_duplicate_key`
        duplicate = _duplicate_key(text, 0, len(text), keys, multiline=False)
        if duplicate is not None:
            return None, f"names key {duplicate!r} twice in one object; nothing guessed"
    if _SURROGATE_ESCAPE.search(text) and _lone_surrogate(obj):
        return None, LONE_SURROGATE
    return obj, None


class _NotJsonNumber(ValueError):
    """A number JSON does not have, met while decoding (see the module's docstring)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        shown = text if len(text) <= 40 else text[:40] + "…"
        if text in _CONSTANTS:
            self.reason = f"holds {text}, which is not a JSON number"
        else:
            self.reason = f"holds the number {shown}, past the range of a float"


_CONSTANTS = ("NaN", "Infinity", "-Infinity")


def _refuse_constant(text: str) -> float:
    raise _NotJsonNumber(text)


def _finite_float(text: str) -> float:
    value = json_float(text)
    if not math.isfinite(value):
        raise _NotJsonNumber(text)
    return value


# Decodes as json.loads does, refusing the numbers JSON does not have (`_NotJsonNumber`), a
# number with a fraction or an exponent kept as its text (`jsonnumbers.json_float`); for a
# line that may hold `-0`, every integer read by `jsonnumbers.json_int` (a Python call per
# integer: only there).
_STRICT = json.JSONDecoder(parse_float=_finite_float, parse_constant=_refuse_constant)
_STRICT_SIGNED = json.JSONDecoder(
    parse_float=_finite_float, parse_constant=_refuse_constant, parse_int=json_int
)


# A lone surrogate escape (`\ud800` without its pair) decodes to a string no UTF-8 output, no
# database and no Stripe request can hold: the line is refused and quarantined as it was
# written (its text has the escape, never the character). Only a line with such an escape
# can hold one (strict UTF-8 decoding refuses encoded surrogates).
LONE_SURROGATE = "holds a lone UTF-16 surrogate escape (\\ud800-\\udfff): not Unicode text"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _lone_surrogate(value: object) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _too_many_keys(obj: object) -> str | None:
    """Why a decoded row names more keys than a row may (`MAX_ROW_KEYS`), or None."""
    if type(obj) is not dict:
        return None
    payload = obj.get("payload")
    named = len(obj) + (len(payload) if type(payload) is dict else 0)
    if named <= MAX_ROW_KEYS:
        return None
    return f"names {named} keys (its own and its payload's); at most {MAX_ROW_KEYS} are read"


def _keys(obj: object) -> int:
    """Keys of a decoded record and of its `payload` and `error` objects (a lower bound of the
    keys its text names: other objects only add to those)."""
    if type(obj) is not dict:
        return 0
    keys = len(obj)
    payload, error = obj.get("payload"), obj.get("error")
    if type(payload) is dict:
        keys += len(payload)
    if type(error) is dict:
        keys += len(error)
    return keys


def _duplicate_key(
    text: str, start: int, end: int, keys: int, *, multiline: bool = True
) -> str | None:
    """A key named twice in one object of `text[start:end]` (json keeps the last), or None;
    `keys` is what `_keys` found decoded.

    Cheap first: every key is followed by its own colon, right after its closing quote or
    after blanks. So when the colons (or failing that, the colons after a quote or a blank)
    are no more than `keys`, no key was named twice (the text names at least those keys, and
    a key named twice or a key of another object would need one more colon). Otherwise the
    text is decoded again, watching the pairs of every object. A JSON line holds no line
    break (`multiline=False`)."""
    if text.count(":", start, end) <= keys:
        return None
    after = text.count('":', start, end) + text.count(" :", start, end)
    after += text.count("\t:", start, end)
    if multiline:
        after += text.count("\n:", start, end) + text.count("\r:", start, end)
    if after <= keys:
        return None
    found: list[str] = []
    json.loads(text[start:end], object_pairs_hook=lambda pairs: _pairs(pairs, found))
    return found[0] if found else None


def _pairs(pairs: list[tuple[str, object]], found: list[str]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs) and not found:
        seen: set[str] = set()
        found.extend(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
    return obj


_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]*)?")


@dataclass(frozen=True, slots=True)
class _Refused:
    """A JSON array element that was read but is not a usable value (and why)."""

    raw: str
    reason: str


class _JsonArrayStream:
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
                    raise UnreadableFile(
                        f"item {number} is longer than {MAX_JSON_ELEMENT_CHARS} characters"
                    ) from exc
                if not self.fill_more():
                    raise UnreadableFile(f"invalid JSON in item {number}: {exc.msg}") from exc
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

    def refused(self, number: int, why: str) -> _Refused:
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
        return _Refused(self.buf[start:end], f"element {why}")

    def _extent(self) -> int | None:
        """Where the element at `pos` ends, or None when the text read so far may end first."""
        buf, pos = self.buf, self.pos
        if buf[pos] in "[{":
            return json_value_end(buf, pos)
        found = _NUMBER.match(buf, pos)
        end = found.end() if found else pos + 1
        return end if end < len(buf) else None

    def checked(self, value: object, start: int, end: int) -> object:
        """`value`, or `_Refused` when its text nests too deep or names a key twice. A
        refused element is kept whole, as a refused JSON line is (its extent is bounded by
        MAX_JSON_ELEMENT_CHARS): cut to RAW_KEPT, what was left was no JSON to fix by hand."""
        buf = self.buf
        if self.odd is not None:
            reason = f"element {_NotJsonNumber(self.odd).reason}"
            return _Refused(buf[start:end], reason)
        brackets = buf.count("[", start, end) + buf.count("{", start, end)
        if brackets > self.depth and json_depth_over(buf[start:end], self.depth):
            reason = f"element is nested deeper than {self.depth} levels"
            return _Refused(buf[start:end], reason)
        too_many = _too_many_keys(value)
        if too_many is not None:
            return _Refused(buf[start:end], f"element {too_many}")
        duplicate = _duplicate_key(buf, start, end, _keys(value))
        if duplicate is not None:
            reason = f"element names key {duplicate!r} twice in one object; nothing guessed"
            return _Refused(buf[start:end], reason)
        if _SURROGATE_ESCAPE.search(buf, start, end) and _lone_surrogate(value):
            return _Refused(buf[start:end], f"element {LONE_SURROGATE}")
        return value

    def expect_end(self) -> None:
        if self.peek() != "":
            raise UnreadableFile("unexpected data after the JSON array")
