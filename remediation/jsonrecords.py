"""Streaming readers for JSON (an array) and JSON Lines usage files: their records.

A file's stream is read through `jsondocuments` (a pretty-printed document one object a
line), as lines (`jsonreaders`) or array elements (`jsonarraystream`), each decoded value
checked (`jsonvalues`) and made a `UsageRecord` here (`record_from_obj`), as the column
readers (`core.jsonlread`, `core.jsonarray`) make those they do not read as columns.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from remediation.errors import not_utf8
from remediation.filetypes import FileFormat
from remediation.jsonarraystream import JsonArrayStream, Refused
from remediation.jsondocuments import objects_document
from remediation.jsonreaders import jsonl_lines, release, text_stream
from remediation.jsonvalues import parse_line
from remediation.records import ERROR_FIELDS, MFX_PREFIX, UsageRecord, resolve_error


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


def array_records(
    text: io.TextIOWrapper, depth: int, after: int | None = None
) -> Iterator[UsageRecord]:
    """The records of the elements of a JSON array, in order (`after`: the text starts inside
    the array, after that many items and the comma following the last; `core.jsonarray`
    hands a stream over so)."""
    items = JsonArrayStream(text, depth).items(after)
    return (record_from_obj(n, obj) for n, obj in items)


def element_record(number: int, text: str, depth: int) -> UsageRecord:
    """The record of array item `number`, whose text (one whole JSON value, blanks stripped)
    is `text`: as the array reader reads it in the stream (a refusal the same)."""
    reader = JsonArrayStream(None, depth)
    reader.buf = text
    return record_from_obj(number, reader.decode(number))


def record_from_obj(number: int, obj: object) -> UsageRecord:
    if isinstance(obj, Refused):
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
    extra = {k: v for k, v in obj.items() if k not in JSON_KNOWN and not not_the_rows(k)}
    payload = _payload_of(obj, extra, problems)
    timestamp = obj.get("timestamp")
    if timestamp is None and "timestamp" in obj:
        extra["timestamp"] = None  # null, as the payload's
    code, message = resolve_error(_error_fields(obj, problems))
    texts = _core_texts(obj, extra, problems)
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


def not_the_rows(key: str) -> bool:
    """Whether a top-level key is an error field or one of our `mfx_` notes, in any case (as a
    CSV's columns are): read, never written to a corrected row. `Error_Code` was read as a
    key of the row's own: a failed-records file of such keys counted valid, nothing re-sent."""
    low = key.lower()
    return low in ERROR_FIELDS or low.startswith(MFX_PREFIX)


def _error_fields(obj: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """The row's error fields by their lower-case names (`resolve_error`); two keys naming
    one field with other values (`error_code`, `Error_Code`) are a problem: which one
    Stripe meant is not guessed."""
    fields: dict[str, Any] = {}
    named: dict[str, str] = {}
    for key, value in obj.items():
        low = key.lower()
        if low not in ERROR_FIELDS:
            continue
        if low in fields and fields[low] != value:
            problems.append(f"error field {low!r} named twice: {named[low]!r} and {key!r}")
            continue
        fields.setdefault(low, value)
        named.setdefault(low, key)
    return fields


def _payload_of(obj: dict[str, Any], extra: dict[str, Any], problems: list[str]) -> dict[Any, Any]:
    """The object's payload for the rules ({} when it has none that is an object); a null or
    other value is kept in `extra` as it came, and one that is no object is a problem; no
    payload key at all is marked (`NO_PAYLOAD`)."""
    payload = obj.get("payload")
    if payload is None:
        if "payload" in obj:  # null: written back so in a quarantined row (`record_object`)
            extra["payload"] = None
        else:  # none: a quarantined row is written without one (`record_object`)
            extra[NO_PAYLOAD] = True
        return {}
    if not isinstance(payload, dict):
        # kept as it came (`writers.record_object` writes it back), never read by a rule
        problems.append(f"payload is a JSON {_json_kind(payload)}, not an object")
        extra["payload"] = payload
        return {}
    return payload


def _core_texts(
    obj: dict[str, Any], extra: dict[str, Any], problems: list[str]
) -> dict[str, str | None]:
    """The identifier's and event name's texts; a value that is no text is kept in `extra`
    as it came, and one that has no text of its own is a problem."""
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
    return texts


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
# The `extra` key marking a row that names no payload (true): our own `mfx_` note, so never a
# key of a file's (`not_the_rows`) nor written. A quarantined row is written without one, as
# it came (`writers.record_object`, `core.jsonrows.row_texts`); `{}` and `null` are kept.
NO_PAYLOAD = "mfx_no_payload"


def names_no_payload(record: UsageRecord) -> bool:
    """Whether a row named no payload and holds none (a rule may fill one: then it has it)."""
    return not record.payload and NO_PAYLOAD in record.extra


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
