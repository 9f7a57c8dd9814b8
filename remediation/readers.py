"""Streaming readers for usage files: CSV here, JSON (array) and JSON Lines in `jsonrecords`.

Memory stays constant: rows are read one at a time (a CSV field up to `limits.MAX_LINE_CHARS`).
Unknown columns and keys are kept in `UsageRecord.extra`; error columns are folded into
`error_code`/`error_message`. Where each field sits in a CSV row, and the CSV convention of
empty cells and ambiguous headers: `csvlayouts`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from remediation.csvlayouts import CsvLayout
from remediation.csvtext import closed_at_end
from remediation.errors import UnreadableFile, not_utf8
from remediation.filetypes import FileFormat
from remediation.jsonreaders import release, text_stream
from remediation.jsonrecords import json_records
from remediation.limits import DEFAULT_LIMITS, MAX_LINE_CHARS, FieldLimits
from remediation.records import UsageRecord

if TYPE_CHECKING:
    from remediation.core.csvread import CsvColumns

CSV_FIELD_LIMIT = MAX_LINE_CHARS

__all__ = ["CSV_FIELD_LIMIT", "CsvRecords", "read_records", "release", "text_stream"]


def read_records(
    stream: BinaryIO,
    fmt: FileFormat,
    *,
    delimiter: str = ",",
    header: Sequence[str] | None = None,
    limits: FieldLimits = DEFAULT_LIMITS,
    renamed: Sequence[tuple[str, str]] = (),
    event_name_fill: str = "",
) -> Iterator[UsageRecord]:
    """Yield records one at a time; raise UnreadableFile on whole-file problems.

    CSV gives a `CsvRecords`, which can also hand out its rows as columns (`columns`).
    `renamed`: (column, alias) of the columns a repaired `header` renamed from an alias;
    `event_name_fill`: the event name of every row of a CSV header without the column.
    """
    if fmt is FileFormat.CSV:
        return CsvRecords(stream, delimiter, header, renamed, event_name_fill)
    return json_records(stream, fmt, limits.max_json_depth)


# --- CSV ---------------------------------------------------------------------------------


class CsvRecords(Iterator[UsageRecord]):
    """The records of a CSV stream, read lazily; or, through `row_batches`, its raw rows.

    A repaired header (`header`, same width as the file's) is used instead of the file's;
    `renamed` says which of its columns were renamed from which alias; `event_name_fill`
    is the event name of every row when the header has no event_name column (a whole-file
    repair: `repair.InputPlan`).
    """

    def __init__(
        self,
        stream: BinaryIO,
        delimiter: str,
        header: Sequence[str] | None,
        renamed: Sequence[tuple[str, str]] = (),
        event_name_fill: str = "",
    ) -> None:
        self._stream, self._delimiter, self._header = stream, delimiter, header
        self.renamed: dict[str, str] = dict(renamed) if header is not None else {}
        self.event_name_fill = event_name_fill
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
        fill = self.event_name_fill
        for number, (layout, rows) in enumerate(self.row_batches(1), 1):
            record = layout.record(number, rows[0])
            if fill and layout.event_name is None:
                record.event_name = fill
            yield record

    def row_batches(self, size: int = 4096) -> Iterator[tuple[CsvLayout, list[list[str]]]]:
        """Non-blank data rows in lists of at most `size` (rows are numbered from 1 in order)."""
        text = text_stream(self._stream)
        try:
            if csv.field_size_limit() < CSV_FIELD_LIMIT:
                csv.field_size_limit(CSV_FIELD_LIMIT)
            rows = csv.reader(closed_at_end(text), delimiter=self._delimiter)
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
