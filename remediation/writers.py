"""Streaming writer for usage records, in the format of the input.

CSV needs its header before the first row: it is given (`columns`, usually the input's header
without error columns) or taken from the first record. `fits(record)` says whether a record's
payload and extra keys all have a column; callers route the others to another file.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import BinaryIO

from remediation.core.jsontext import line_safe
from remediation.filetypes import FileFormat
from remediation.jsonnumbers import dumps
from remediation.jsonrecords import names_no_payload
from remediation.records import (
    CORE_FIELDS,
    MFX_PREFIX,
    PAYLOAD_PREFIX,
    UsageRecord,
    header_name,
)
from remediation.spool import write_shared

ERROR_OUT_FIELDS = ("error_code", "error_message")
_OBJECT_KEYS = frozenset((*CORE_FIELDS, "payload"))  # `record_object` writes these first
Getter = Callable[[UsageRecord], str]
# A timestamp of whole unix seconds as a number spells it (no sign, no leading zero, no more
# digits than an int64 holds): a row sent to Stripe writes it as a JSON number, as Stripe's S3
# file format shows it, whatever it was read as (a CSV cell is text; its connector taking a
# JSON string is undocumented). `core.jsonlout` writes it so on columns.
WHOLE_SECONDS = re.compile(r"[1-9][0-9]{0,17}")


def cell(value: object) -> str:
    """A CSV cell: None is empty, booleans are lower-case, the rest as str()."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def default_columns(record: UsageRecord) -> list[str]:
    return [
        *CORE_FIELDS,
        *(PAYLOAD_PREFIX + key for key in record.payload),
        *(key for key in record.extra if not key.startswith(MFX_PREFIX)),
    ]


def record_object(
    record: UsageRecord, with_errors: bool = False, *, as_came: bool = False
) -> dict[str, object]:
    """The JSON object of a record: core keys (omitted when None), payload, extra keys.

    `as_came` (a quarantined row): a core key or payload the JSON reader kept in `extra` as
    it came (null, a number where text belongs, a value of the wrong shape) is written so, in
    its place. Otherwise (a row sent to Stripe) those are left out: the identifier is the text
    Stripe takes, a null timestamp or event name is absent as before."""
    kept = record.extra if as_came else {}
    obj: dict[str, object] = {}
    for name, value in (
        ("identifier", record.identifier),
        ("timestamp", record.timestamp),
        ("event_name", record.event_name),
    ):
        if name in kept:
            obj[name] = kept[name]
        elif value is not None:
            sent = name == "timestamp" and not (as_came or with_errors)  # a row to Stripe
            obj[name] = _sent_timestamp(value) if sent else value
    # none when it named none: as it came, or carried on to remediation with its error (the
    # poller's failed records: a `{}` there was read as a payload named empty)
    if not ((as_came or with_errors) and names_no_payload(record)):
        obj["payload"] = kept["payload"] if _payload_came(record, kept) else record.payload
    for key, value in record.extra.items():
        if not key.startswith(MFX_PREFIX) and key not in _OBJECT_KEYS:
            obj[key] = value
    if with_errors and (record.error_code or record.error_message):
        obj["error"] = {"code": record.error_code, "message": record.error_message}
    return obj


def _sent_timestamp(value: object) -> object:
    """A timestamp of whole seconds as a JSON number (`WHOLE_SECONDS`); any other as it is."""
    return int(value) if isinstance(value, str) and WHOLE_SECONDS.fullmatch(value) else value


def _payload_came(record: UsageRecord, kept: Mapping[str, object]) -> bool:
    """Whether the payload is written as the JSON reader kept it: null, or no object (a
    malformed row); not a CSV column named `payload` beside a row's payload columns."""
    if "payload" not in kept or record.payload:
        return False
    return kept["payload"] is None or record.malformed is not None


class RecordWriter:
    """Context manager writing records to a binary stream (which it does not close)."""

    def __init__(
        self,
        stream: BinaryIO,
        fmt: FileFormat,
        *,
        columns: Sequence[str] | None = None,
        annotations: Sequence[str] = (),
        with_errors: bool = False,
    ) -> None:
        self.fmt, self.rows = fmt, 0
        self._stream = stream
        self._text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
        self._annotations = tuple(annotations)
        self._with_errors = with_errors
        self._columns: list[str] | None = list(columns) if columns is not None else None
        self._getters: list[Getter] | None = None  # set with the header, by the first row
        self._column_set: frozenset[str] | None = None
        self._csv = csv.writer(self._text) if fmt is FileFormat.CSV else None

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def columns(self) -> list[str] | None:
        return self._columns

    def fits(self, record: UsageRecord) -> bool:
        """True unless the CSV header lacks a column this record needs."""
        if self._csv is None or self._columns is None:
            return True
        if self._column_set is None:
            self._column_set = frozenset(self._columns)
        return record_fits(record, self._column_set)

    def write(self, record: UsageRecord, notes: Mapping[str, object] | None = None) -> int:
        """Write one record; the characters written (at most 4 UTF-8 bytes each)."""
        if self._csv is not None:
            written = self._write_csv(record, notes or {})
        else:
            written = self._write_json(record, notes or {})
        self.rows += 1
        return written

    def size(self) -> int:
        """Bytes written so far (flushes)."""
        self._text.flush()
        return self._stream.tell()

    def close(self) -> None:
        if self.fmt is FileFormat.JSON and self.rows:
            self._text.write("\n]\n")
        self._text.flush()
        self._text.detach()

    def _write_csv(self, record: UsageRecord, notes: Mapping[str, object]) -> int:
        assert self._csv is not None
        if self._getters is None:
            self._getters = self._start_csv(record)
        row = [get(record) for get in self._getters]
        row.extend(cell(notes.get(name)) for name in self._annotations)
        return int(self._csv.writerow(row))

    def write_bytes(self, data: bytes | memoryview, rows: int) -> None:
        """`rows` rows already encoded: CSV in this writer's columns (see `core.csvout`) or
        JSON Lines (`core.jsonlout`), which a JSON array's writer writes as its elements (each
        line as `_write_json` writes it, the separators between: no JSON line holds a line
        break)."""
        if self._csv is not None:
            assert self._columns is not None
            if self._getters is None:
                self._getters = self._start_csv(None)
        elif self.fmt is FileFormat.JSON and rows:
            lines = bytes(data)
            data = (b",\n" if self.rows else b"[\n") + lines[:-1].replace(b"\n", b",\n")
        self._text.flush()
        write_shared(self._stream, data)
        self.rows += rows

    def _start_csv(self, record: UsageRecord | None) -> list[Getter]:
        """Writes the header; the getters of its columns (none: only the notes are written)."""
        assert self._csv is not None
        if self._columns is None:
            assert record is not None
            self._columns = default_columns(record)
        columns = output_columns(self._columns)
        if self._with_errors:
            columns += ERROR_OUT_FIELDS
        self._csv.writerow([*map(header_name, columns), *self._annotations])
        return [getter(name) for name in columns]

    def _write_json(self, record: UsageRecord, notes: Mapping[str, object]) -> int:
        # an annotated writer's rows (`mfx_code`, `mfx_reason`) are quarantined: as they came
        obj = record_object(record, self._with_errors, as_came=bool(self._annotations))
        obj.update(notes)
        line = dumps(obj)
        line = line_safe(line)  # `core.jsontext.json_lines_safe`, for one line
        if self.fmt is FileFormat.JSONL:
            return self._text.write(line + "\n")
        return self._text.write(("[\n" if self.rows == 0 else ",\n") + line)


def record_fits(record: UsageRecord, columns: frozenset[str]) -> bool:
    """True when every payload and extra key of the record has a column."""
    keys = [PAYLOAD_PREFIX + k for k in record.payload]
    keys += [k for k in record.extra if not k.startswith(MFX_PREFIX)]
    return all(k in columns for k in keys)


def output_columns(columns: Sequence[str]) -> list[str]:
    """The CSV columns a writer given `columns` writes (error columns dropped)."""
    return [c for c in columns if c not in ERROR_OUT_FIELDS]


def getter(column: str) -> Getter:
    """The cell of `column` for a record."""
    if column == "identifier":
        return lambda r: cell(r.identifier)
    if column == "timestamp":
        return lambda r: cell(r.timestamp)
    if column == "event_name":
        return lambda r: cell(r.event_name)
    if column == "error_code":
        return lambda r: cell(r.error_code)
    if column == "error_message":
        return lambda r: cell(r.error_message)
    if payload_column(column):
        key = column[len(PAYLOAD_PREFIX) :]
        return lambda r: cell(r.payload.get(key))
    return lambda r: cell(r.extra.get(column))


def payload_column(column: str) -> bool:
    """Whether an output column holds a payload key: `payload_<key>`, a key after the prefix
    (a column named `payload_` alone is the row's own, as the CSV reader reads it)."""
    return column.startswith(PAYLOAD_PREFIX) and len(column) > len(PAYLOAD_PREFIX)
