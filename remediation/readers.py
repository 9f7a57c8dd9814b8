"""Streaming readers for usage files: CSV, JSON (array) and JSON Lines.

Memory stays constant: CSV and JSON Lines are read row by row, a JSON array is decoded one
element at a time with `json.JSONDecoder.raw_decode` over 64 KiB chunks. Unknown columns and
keys are kept in `UsageRecord.extra`; error columns are folded into `error_code`/`error_message`.
CSV convention (assumed, Stripe does not say): an empty `payload_<key>` cell means the key is
absent, and an empty identifier/timestamp/event_name cell means none was given.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import BinaryIO

from remediation.errors import UnreadableFile
from remediation.filetypes import FileFormat
from remediation.records import (
    ERROR_FIELDS,
    MFX_PREFIX,
    PAYLOAD_PREFIX,
    UsageRecord,
    resolve_error,
)

CHUNK_CHARS = 64 * 1024
MAX_JSON_ELEMENT_CHARS = 64 * 1024 * 1024
CSV_FIELD_LIMIT = 256 * 1024 * 1024


def text_stream(stream: BinaryIO) -> io.TextIOWrapper:
    """UTF-8 text over a binary stream; a leading BOM is dropped."""
    return io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")


def read_records(
    stream: BinaryIO,
    fmt: FileFormat,
    *,
    delimiter: str = ",",
    header: Sequence[str] | None = None,
) -> Iterator[UsageRecord]:
    """Yield records one at a time; raise UnreadableFile on whole-file problems.

    CSV gives a `CsvRecords`, which can also hand out its raw rows (the engine's fast path).
    """
    if fmt is FileFormat.CSV:
        return CsvRecords(stream, delimiter, header)
    return _json_records(stream, fmt)


def _json_records(stream: BinaryIO, fmt: FileFormat) -> Iterator[UsageRecord]:
    text = text_stream(stream)
    try:
        if fmt is FileFormat.JSON:
            yield from (_record_from_obj(n, obj) for n, obj in _json_array_items(text))
        else:
            yield from _jsonl_records(text)
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"not UTF-8 text: undecodable byte at offset {exc.start}") from exc
    finally:
        text.detach()


# --- CSV ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """Where each field of a record sits in a CSV row (computed once from the header)."""

    header: tuple[str, ...]
    identifier: int | None
    timestamp: int | None
    event_name: int | None
    payload: tuple[tuple[int, str], ...]
    extra: tuple[tuple[int, str], ...]
    errors: tuple[tuple[int, str], ...]
    simple_errors: tuple[int, int | None] | None = None  # (error_code, error_message) indexes

    @classmethod
    def from_header(cls, header: Sequence[str]) -> CsvLayout:
        names = tuple(name.strip() for name in header)
        lowered = [name.lower() for name in names]
        core = {
            k: (lowered.index(k) if k in lowered else None)
            for k in ("identifier", "timestamp", "event_name")
        }
        payload, extra, errors = [], [], []
        for i, (name, low) in enumerate(zip(names, lowered, strict=True)):
            if low in core and core[low] == i:
                continue
            if low.startswith(PAYLOAD_PREFIX) and len(low) > len(PAYLOAD_PREFIX):
                payload.append((i, name[len(PAYLOAD_PREFIX) :]))
            elif low in ERROR_FIELDS:
                errors.append((i, low))
            else:
                extra.append((i, name))
        layout = cls(
            names,
            core["identifier"],
            core["timestamp"],
            core["event_name"],
            tuple(payload),
            tuple(extra),
            tuple(errors),
        )
        return replace(layout, simple_errors=_error_columns(layout))

    def _read_errors(self, rec: UsageRecord, row: Sequence[str]) -> None:
        simple = self.simple_errors
        if simple is None:
            rec.error_code, rec.error_message = resolve_error({k: row[i] for i, k in self.errors})
            return
        code = row[simple[0]].strip().lower()
        message = row[simple[1]].strip() if simple[1] is not None else ""
        rec.error_code, rec.error_message = code or None, message or None

    def columns(self) -> list[str]:
        """Output column names in input order: canonical core names, no error columns."""
        names = {
            self.identifier: "identifier",
            self.timestamp: "timestamp",
            self.event_name: "event_name",
        }
        names.update({i: PAYLOAD_PREFIX + key for i, key in self.payload})
        names.update({i: name for i, name in self.extra})
        return [names[i] for i in range(len(self.header)) if i in names]

    def record(self, number: int, row: Sequence[str]) -> UsageRecord:
        width = len(self.header)
        malformed = None
        if len(row) != width:
            malformed = f"row has {len(row)} fields, header has {width}"
            row = [*row[:width], *([""] * (width - len(row)))]
        rec = UsageRecord(
            number,
            _cell(row, self.identifier),
            _cell(row, self.timestamp),
            _cell(row, self.event_name),
            {key: row[i] for i, key in self.payload if row[i] != ""},
            {name: row[i] for i, name in self.extra},
            malformed=malformed,
        )
        if self.errors:
            self._read_errors(rec, row)
        return rec


def _error_columns(layout: CsvLayout) -> tuple[int, int | None] | None:
    """(code index, message index) when the file has the common error_code/error_message pair."""
    names = dict((name, i) for i, name in layout.errors)
    if "error_code" in names and set(names) <= {"error_code", "error_message"}:
        return names["error_code"], names.get("error_message")
    return None


def _cell(row: Sequence[str], index: int | None) -> str | None:
    if index is None:
        return None
    value = row[index]
    return value if value != "" else None


class CsvRecords(Iterator[UsageRecord]):
    """The records of a CSV stream, read lazily; or, through `row_batches`, its raw rows.

    A repaired header (`header`, same width as the file's) is used instead of the file's.
    """

    def __init__(self, stream: BinaryIO, delimiter: str, header: Sequence[str] | None) -> None:
        self._stream, self._delimiter, self._header = stream, delimiter, header
        self._records: Iterator[UsageRecord] | None = None

    @property
    def delimiter(self) -> str:
        return self._delimiter

    @property
    def header(self) -> Sequence[str] | None:
        return self._header

    def path(self) -> Path | None:
        """The file this reads, when it is a regular file not yet read from (else None)."""
        name = getattr(self._stream, "name", None)
        if not isinstance(name, str) or self._records is not None or not os.path.isfile(name):
            return None
        if not self._stream.seekable() or self._stream.tell() != 0:
            return None
        return Path(name).resolve()

    def __next__(self) -> UsageRecord:
        if self._records is None:
            self._records = self._read_records()
        return next(self._records)

    def _read_records(self) -> Iterator[UsageRecord]:
        for number, (layout, rows) in enumerate(self.row_batches(1), 1):
            yield layout.record(number, rows[0])

    def row_batches(self, size: int = 4096) -> Iterator[tuple[CsvLayout, list[list[str]]]]:
        """Non-blank data rows in lists of at most `size` (rows are numbered from 1 in order)."""
        text = text_stream(self._stream)
        try:
            if csv.field_size_limit() < CSV_FIELD_LIMIT:
                csv.field_size_limit(CSV_FIELD_LIMIT)
            rows = csv.reader(text, delimiter=self._delimiter)
            header = next(rows, None)
            if header is None:
                return
            if self._header is not None and len(self._header) == len(header):
                header = list(self._header)
            layout = CsvLayout.from_header(header)
            while batch := list(islice(rows, size)):
                if not all(batch):  # csv.reader yields [] for a blank line; it is not a record
                    batch = [row for row in batch if row]
                if batch:
                    yield layout, batch
        except UnicodeDecodeError as exc:
            raise UnreadableFile(f"not UTF-8 text: undecodable byte at offset {exc.start}") from exc
        except csv.Error as exc:
            raise UnreadableFile(f"broken CSV: {exc}") from exc
        finally:
            text.detach()


# --- JSON / JSON Lines -------------------------------------------------------------------


def _record_from_obj(number: int, obj: object) -> UsageRecord:
    if not isinstance(obj, dict):
        return UsageRecord(
            number,
            None,
            None,
            None,
            {},
            {"element": obj},
            malformed=f"element is a JSON {type(obj).__name__}, not an object",
        )
    payload = obj.get("payload")
    malformed = None
    if payload is None:
        payload = {}
    elif not isinstance(payload, dict):
        malformed, payload = "payload is not an object", {}
    code, message = resolve_error({k: obj[k] for k in ERROR_FIELDS if k in obj})
    extra = {
        k: v
        for k, v in obj.items()
        if k not in _JSON_KNOWN and k not in ERROR_FIELDS and not k.startswith(MFX_PREFIX)
    }
    identifier, event_name = obj.get("identifier"), obj.get("event_name")
    return UsageRecord(
        number,
        None if identifier is None or identifier == "" else str(identifier),
        obj.get("timestamp"),
        None if event_name is None or event_name == "" else str(event_name),
        dict(payload),
        extra,
        code,
        message,
        malformed,
    )


_JSON_KNOWN = frozenset({"identifier", "timestamp", "event_name", "payload"})


def _jsonl_records(text: io.TextIOWrapper) -> Iterator[UsageRecord]:
    number = 0
    for line in text:
        stripped = line.strip()
        if not stripped:
            continue
        number += 1
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as exc:
            yield UsageRecord(
                number,
                None,
                None,
                None,
                {},
                {"raw": stripped},
                malformed=f"line is not JSON: {exc.msg}",
            )
            continue
        yield _record_from_obj(number, obj)


def _json_array_items(text: io.TextIOWrapper) -> Iterator[tuple[int, object]]:
    """Decode `[elem, elem, ...]` one element at a time."""
    return _JsonArrayStream(text).items()


class _JsonArrayStream:
    """A window over the text: `buf[pos:]` is what has not been consumed yet."""

    def __init__(self, text: io.TextIOWrapper) -> None:
        self.text, self.buf, self.pos = text, "", 0
        self.decoder = json.JSONDecoder()

    def fill(self) -> bool:
        chunk = self.text.read(CHUNK_CHARS)
        self.buf, self.pos = self.buf[self.pos :] + chunk, 0
        return bool(chunk)

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

    def items(self) -> Iterator[tuple[int, object]]:
        first = self.peek()
        if first == "":
            return
        if first != "[":
            raise UnreadableFile("JSON file is not an array (expected '[')")
        self.pos += 1
        number, expect_value = 0, True
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
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                too_big = len(self.buf) - self.pos > MAX_JSON_ELEMENT_CHARS
                if too_big or not self.fill():
                    raise UnreadableFile(f"invalid JSON in item {number}: {exc.msg}") from exc
                continue
            if end == len(self.buf) and self.fill():
                continue  # a bare number may go on in the next chunk: decode again
            self.pos = end
            return value

    def expect_end(self) -> None:
        if self.peek() != "":
            raise UnreadableFile("unexpected data after the JSON array")
