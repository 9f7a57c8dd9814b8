"""Streaming readers for usage files: CSV here, JSON (array) and JSON Lines in `jsonrecords`.

Memory stays constant: rows are read one at a time (a CSV field up to `limits.MAX_LINE_CHARS`).
Unknown columns and keys are kept in `UsageRecord.extra`; error columns are folded into
`error_code`/`error_message`. CSV convention (assumed, Stripe does not say): an empty
`payload_<key>` cell means the key is absent, and an empty identifier/timestamp/event_name cell
means none was given. An ambiguous header (a column named twice) fails the whole file: which
column Stripe should bill is unknowable, so nothing is guessed.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from remediation.errors import UnreadableFile, not_utf8
from remediation.filetypes import FileFormat
from remediation.jsonreaders import release, text_stream
from remediation.jsonrecords import json_records
from remediation.limits import DEFAULT_LIMITS, MAX_LINE_CHARS, FieldLimits
from remediation.records import (
    ERROR_FIELDS,
    MFX_PREFIX,
    PAYLOAD_PREFIX,
    UsageRecord,
    resolve_error,
    unnamed_key,
)

if TYPE_CHECKING:
    from remediation.core.csvread import CsvColumns

CSV_FIELD_LIMIT = MAX_LINE_CHARS

__all__ = ["CSV_FIELD_LIMIT", "CsvLayout", "CsvRecords", "read_records", "release", "text_stream"]


def read_records(
    stream: BinaryIO,
    fmt: FileFormat,
    *,
    delimiter: str = ",",
    header: Sequence[str] | None = None,
    limits: FieldLimits = DEFAULT_LIMITS,
    renamed: Sequence[tuple[str, str]] = (),
) -> Iterator[UsageRecord]:
    """Yield records one at a time; raise UnreadableFile on whole-file problems.

    CSV gives a `CsvRecords`, which can also hand out its rows as columns (`columns`).
    `renamed`: (column, alias) of the columns a repaired `header` renamed from an alias.
    """
    if fmt is FileFormat.CSV:
        return CsvRecords(stream, delimiter, header, renamed)
    return json_records(stream, fmt, limits.max_json_depth)


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
        _refuse_duplicates(names, lowered)
        core = {
            k: (lowered.index(k) if k in lowered else None)
            for k in ("identifier", "timestamp", "event_name")
        }
        payload: list[tuple[int, str]] = []
        extra: list[tuple[int, str]] = []
        errors: list[tuple[int, str]] = []
        unnamed = 0
        for i, (name, low) in enumerate(zip(names, lowered, strict=True)):
            if low in core and core[low] == i:
                continue
            if low.startswith(PAYLOAD_PREFIX) and len(low) > len(PAYLOAD_PREFIX):
                payload.append((i, name[len(PAYLOAD_PREFIX) :]))
            elif low in ERROR_FIELDS:
                errors.append((i, low))
            elif not name:  # each unnamed column its own key, the first one ''
                extra.append((i, unnamed_key(i + 1) if unnamed else name))
                unnamed += 1
            elif not name.startswith(MFX_PREFIX):  # our notes of an earlier run: not the row's
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
            malformed = ragged_reason(row, width)
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


def _refuse_duplicates(names: Sequence[str], lowered: Sequence[str]) -> None:
    """A column named twice (`payload_value` twice): which one Stripe should bill is unknowable,
    so the whole file fails with the reason. Core and error names are case-insensitive. Our
    own `mfx_` notes are not read at all: named twice (a quarantine file written from a
    quarantine file fed back, before they were dropped on reading), they are no ambiguity."""
    seen: dict[str, int] = {}
    for at, (name, low) in enumerate(zip(names, lowered, strict=True), 1):
        key = low if low in _CASELESS or not low.startswith(PAYLOAD_PREFIX) else name
        if key in seen and name and not name.startswith(MFX_PREFIX):
            raise UnreadableFile(
                f"ambiguous header: column {name!r} appears twice (columns {seen[key]} and {at}); "
                "nothing guessed"
            )
        seen.setdefault(key, at)


_CASELESS = frozenset({"identifier", "timestamp", "event_name", *ERROR_FIELDS})


def _error_columns(layout: CsvLayout) -> tuple[int, int | None] | None:
    """(code index, message index) when the file has the common error_code/error_message pair."""
    names = dict((name, i) for i, name in layout.errors)
    if "error_code" in names and set(names) <= {"error_code", "error_message"}:
        return names["error_code"], names.get("error_message")
    return None


def ragged_reason(row: Sequence[str], width: int) -> str:
    """Why a row of the wrong width is malformed. The row keeps the header's width (its cells
    under their columns, as read), so the cells past it are in the reason, as a JSON list:
    a quarantined row is kept in full (an unquoted `1,234` leaves `234` past the header)."""
    reason = f"row has {len(row)} fields, header has {width}"
    if len(row) > width:
        reason += "; fields past the header: " + json.dumps(row[width:], ensure_ascii=False)
    return reason + _line_breaks(row)


def _line_breaks(row: Sequence[str]) -> str:
    """What a ragged row says when a quote left open has read the next lines into it."""
    breaks = sum(cell.count("\n") for cell in row)
    if not breaks:
        return ""
    return (
        f"; a quoted field holds {breaks} line break(s): a quote left open swallowed the "
        "lines after it"
    )


def _cell(row: Sequence[str], index: int | None) -> str | None:
    if index is None:
        return None
    value = row[index]
    return value if value != "" else None


class CsvRecords(Iterator[UsageRecord]):
    """The records of a CSV stream, read lazily; or, through `row_batches`, its raw rows.

    A repaired header (`header`, same width as the file's) is used instead of the file's;
    `renamed` says which of its columns were renamed from which alias.
    """

    def __init__(
        self,
        stream: BinaryIO,
        delimiter: str,
        header: Sequence[str] | None,
        renamed: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._stream, self._delimiter, self._header = stream, delimiter, header
        self.renamed: dict[str, str] = dict(renamed) if header is not None else {}
        self._records: Iterator[UsageRecord] | None = None
        self._columns: CsvColumns | None = None

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

    def columns(self, block_bytes: int = 1 << 20) -> CsvColumns:
        """The same rows as text columns, in blocks (see `core.csvread`)."""
        from remediation.core.csvread import CsvColumns

        self._columns = CsvColumns(self._stream, self._delimiter, self._header, block_bytes)
        return self._columns

    @property
    def columns_header(self) -> tuple[str, ...] | None:
        """The header the rows read as columns came under (`CsvLayout.header`); None before
        they are read, or for an empty file."""
        layout = None if self._columns is None else self._columns.layout
        return None if layout is None else layout.header

    def identifiers(self) -> Iterator[tuple[str | None, int]]:
        """(identifier, row number) of every row, read as a column (an empty cell is none)."""
        for first, cells in self.identifier_blocks():
            for number, identifier in enumerate(cells, first):
                yield identifier or None, number

    def identifier_blocks(self) -> Iterator[tuple[int, list[str]]]:
        """The identifier cells of every row ("" where empty), a block at a time, each with
        the row number of its first row."""
        reader = self.columns()
        if reader.read_header() is None or reader.layout is None:
            return
        at = reader.layout.identifier
        for block in reader.blocks():
            cells = block.cells[at].to_pylist() if at is not None else [""] * block.rows
            yield block.first_row, cells

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
            header = header_row(rows)
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
            raise not_utf8(self._stream) from exc
        except csv.Error as exc:
            raise UnreadableFile(csv_error(exc)) from exc
        finally:
            release(text)


def header_row(rows: Iterator[list[str]]) -> list[str] | None:
    """The first row that is not blank (the file's repair finds the header past blank lines
    and spaces before it, `repair.plan_input`; read from the first line, the blank one, every
    row was malformed, "row has 5 fields, header has 0", its cells dropped); None for none."""
    for row in rows:
        if len(row) > 1 or (row and row[0].strip()):
            return row
    return None


def csv_error(exc: csv.Error) -> str:
    if "field larger than field limit" in str(exc):
        return (
            f"broken CSV: a field is longer than {CSV_FIELD_LIMIT} characters (a quote left open?)"
        )
    return f"broken CSV: {exc}"
