"""CSV columns, fast: the rows `readers.CsvRecords.row_batches` gives, as Arrow string arrays.

The stream is read in blocks cut after a line end. pyarrow's parser reads a block only when it
provably reads it as csv.reader does: every quote opens a field, closes one or doubles one inside
(checked with numpy), so both see the same fields and the block ends outside quotes. Any other
block is read by csv.reader alone, and the fast path resumes after it when csv.reader ends the
block between records. Otherwise (undecodable bytes, a csv.Error, a field longer than a few
blocks, a quote left open) csv.reader reads the rest of the file, its bytes decoded in the chunks
`jsonreaders.text_stream` decodes, so the same rows come out and the same error is raised, down
to the offset of an undecodable byte (which io.TextIOWrapper counts from the start of a chunk).
(The stream's bytes and their decoding: `csvsource`; where a block is cut and whether pyarrow
may read it: `csvcuts`.)
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv

from remediation.core.csvcuts import (
    CR,
    block_rows,
    delimiter_byte,
    even_quotes,
    line_end,
    quotes_regular,
    rows_cut,
)
from remediation.core.csvsource import TEXT_CHUNK, ByteSource, exact_lines
from remediation.core.csvwidths import plain_widths
from remediation.csvlayouts import CsvLayout, ragged_reason
from remediation.errors import UnreadableFile, not_utf8
from remediation.readers import CSV_FIELD_LIMIT, csv_error, header_row

__all__ = ["CsvBlock", "CsvColumns"]

EXACT_BATCH_ROWS = 65536
GROWTH = 4  # a block grows to GROWTH * block_bytes to reach a line end outside quotes
# Lines a block holds at most: one of tiny rows (`x`, a million in 2 MB) was a million Python
# lists, padded rows and reasons at once (1M rows of one cell under a 6-column header: 607
# MB); a block of usage rows (60 bytes and more) never nears it.
MAX_BLOCK_LINES = EXACT_BATCH_ROWS


@dataclass(frozen=True, slots=True)
class CsvBlock:
    """Consecutive non-blank data rows as columns, padded or cut to the header's width."""

    first_row: int  # number of its first data row (1-based, header excluded)
    cells: list[pa.Array]  # one pa.string() array per header column, no nulls
    malformed: dict[int, str]  # block-row index -> reason, for rows of the wrong width
    # Each column's widest cell in bytes, when no cell holds a control character (`csvwidths`)
    widths: list[int] | None = None

    @property
    def rows(self) -> int:
        # With no header column every row is malformed (a non-blank row has a field).
        return len(self.cells[0]) if self.cells else len(self.malformed)


@contextmanager
def _as_unreadable(stream: BinaryIO) -> Iterator[None]:
    """The errors `CsvRecords.row_batches` turns into UnreadableFile, turned the same way
    (`stream`: the file's, where an undecodable byte is looked for)."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise not_utf8(stream) from exc
    except csv.Error as exc:
        raise UnreadableFile(csv_error(exc)) from exc


class CsvColumns:
    """The header and data rows of a CSV stream, in `CsvBlock`s of about `block_bytes` of input.

    A repaired `header` of the file's width replaces the file's, as in `CsvRecords`. Counters:
    `fast_blocks` were parsed by pyarrow, `exact_blocks` built from csv.reader rows.
    """

    def __init__(
        self,
        stream: BinaryIO,
        delimiter: str,
        header: Sequence[str] | None,
        block_bytes: int = 1 << 20,
    ) -> None:
        self._source = ByteSource(stream)
        self._delimiter, self._repaired = delimiter, header
        # A block never outgrows the field limit, so no field csv.reader refuses reaches pyarrow.
        self._block_bytes = max(1, min(block_bytes, CSV_FIELD_LIMIT // GROWTH))
        self._header: tuple[str, ...] | None = None
        self._rows: Iterator[list[str]] | None = None  # set when csv.reader reads it all
        self._started = False
        self._next_row = 1
        self.fast_blocks = self.exact_blocks = 0

    @property
    def layout(self) -> CsvLayout | None:
        return None if self._header is None else CsvLayout.from_header(self._header)

    def read_header(self) -> tuple[str, ...] | None:
        """The header (the repaired one if as wide as the file's); None for an empty file."""
        if self._started:
            return self._header
        self._started = True
        if csv.field_size_limit() < CSV_FIELD_LIMIT:  # as `CsvRecords.row_batches` does
            csv.field_size_limit(CSV_FIELD_LIMIT)
        with _as_unreadable(self._source.stream):
            header = self._quick_header()
            if header is None:
                self._rows = csv.reader(exact_lines(self._source), delimiter=self._delimiter)
                header = header_row(self._rows)
        if header is not None and self._repaired is not None:
            header = list(self._repaired) if len(self._repaired) == len(header) else header
        self._header = None if header is None else tuple(header)
        if self._header is not None:
            CsvLayout.from_header(self._header)  # an ambiguous header fails the file, as today
        return self._header

    def blocks(self) -> Iterator[CsvBlock]:
        """The non-blank data rows in blocks, numbered from 1 in order."""
        if self.read_header() is None:
            return
        with _as_unreadable(self._source.stream):
            rows = self._rows
            if rows is None:
                rows = yield from self._quick_blocks()
            if rows is not None:
                yield from self._exact_blocks(rows)

    # --- the header ---------------------------------------------------------------------

    def _quick_header(self) -> list[str] | None:
        """The first line split at the delimiter (or read by csv.reader, when it holds quotes:
        exporters that quote every field quote the names too), when that is what csv.reader
        reads of the file and today's decoding raises nothing before it; else None (csv.reader
        reads the whole file: a quoted header sent every row of such a file there, 1M rows in
        3.3 s and 193 MB instead of 0.6 s and 101 MB)."""
        if delimiter_byte(self._delimiter) is None:
            return None
        limit = self._block_bytes
        while not (end := line_end(raw := self._source.fill(limit), limit, first=True)):
            if len(raw) < limit or limit >= GROWTH * self._block_bytes:
                return None  # only a header, or a huge one
            limit *= 2
        skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
        line = raw[skip : end - 1]
        if not line.strip() or not self._decodes_through(end - 1):
            return None  # a blank line before the header: csv.reader's path skips it
        if b'"' in line:  # quoted names: csv.reader's, when the line holds the whole record
            rows = block_rows(raw[skip:end], self._delimiter, final=False)
            if rows is None or len(rows) != 1 or header_row(iter(rows)) is None:
                return None
            self._source.take(end)
            return rows[0]
        self._source.take(end)
        return line.decode("utf-8").split(self._delimiter)

    def _decodes_through(self, index: int) -> bool:
        """Whether io.TextIOWrapper decodes every chunk it reads to find the line end at `index`
        without an error (it reads one more when that end is a \\r closing a chunk)."""
        stop = (index // TEXT_CHUNK + 1) * TEXT_CHUNK
        raw = self._source.pending
        if raw[index] == CR and index == stop - 1:
            stop += TEXT_CHUNK
        raw = self._source.fill(stop + 1)
        try:
            codecs.getincrementaldecoder("utf-8-sig")().decode(raw[:stop], len(raw) <= stop)
        except UnicodeDecodeError:
            return False
        return True

    # --- blocks ---------------------------------------------------------------------------

    def _cut(self) -> tuple[bool, int]:
        """(final, length) of the next block: after its last line end with an even number of
        quotes before it, grown up to GROWTH times `block_bytes`; the whole rest when that is
        shorter; 0 when no line end is near (a huge field). At most MAX_BLOCK_LINES lines."""
        final, size = self._cut_bytes()
        if size and (capped := rows_cut(self._source.pending, size, MAX_BLOCK_LINES)):
            return False, capped
        return final, size

    def _cut_bytes(self) -> tuple[bool, int]:
        limit = self._block_bytes
        while True:
            raw = self._source.fill(limit + 1)
            if self._source.eof and len(raw) <= limit:
                return True, len(raw)
            cut = line_end(raw, limit, first=False)
            if (cut and even_quotes(raw, cut)) or limit >= GROWTH * self._block_bytes:
                return False, cut
            limit *= 2

    def _quick_blocks(self) -> Generator[CsvBlock, None, Iterator[list[str]] | None]:
        """Blocks read by pyarrow or csv.reader; returns csv.reader over the rest of the file
        when it must read it all, else None."""
        delimiter = delimiter_byte(self._delimiter)
        if delimiter is None or not self._header:
            return self._exact_rows()
        while self._source.fill(self._block_bytes + 1):
            final, size = self._cut()
            if size == 0:
                return self._exact_rows()  # no line end within reach: a huge field
            block = self._source.pending[:size]
            if (parsed := self._parsed(block, delimiter)) is not None:
                found = self._table_block(parsed)
            elif (rows := block_rows(block, self._delimiter, final)) is not None:
                found = self._exact_block(rows)
            else:
                return self._exact_rows()  # a record running past the block, or an error
            # the block's bytes and its table are let go before it is used (held through the
            # yield, they were a block's worth more at the run's peak)
            del parsed, block
            self._source.skip(size)
            if found is not None:
                yield found
        return None

    def _parsed(self, block: bytes, delimiter: int) -> tuple[Any, list[int] | None] | None:
        """The block as a pyarrow table of strings, when that provably holds csv.reader's rows,
        and its columns' widest cells when they can be read off its bytes (`plain_widths`)."""
        if block.startswith(codecs.BOM_UTF8) or not quotes_regular(block, delimiter):
            return None  # pyarrow drops a BOM opening its buffer; csv.reader keeps it
        names = [f"c{i}" for i in range(len(self._header or ()))]
        read = pacsv.ReadOptions(column_names=names, use_threads=False, block_size=len(block) + 1)
        parse = pacsv.ParseOptions(
            delimiter=self._delimiter,
            quote_char='"',
            double_quote=True,
            newlines_in_values=True,
            ignore_empty_lines=True,
        )
        convert = pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        try:
            table = pacsv.read_csv(pa.BufferReader(block), read, parse, convert)
        except pa.ArrowInvalid:  # a row of another width, undecodable bytes, an empty block
            return None
        return table, plain_widths(block, delimiter, table)

    def _table_block(self, parsed: tuple[Any, list[int] | None]) -> CsvBlock | None:
        self.fast_blocks += 1
        table, widths = parsed
        if table.num_rows == 0:
            return None
        # one chunk a column (the block is parsed whole): used as it is, not copied
        cells = [c.chunk(0) if c.num_chunks == 1 else c.combine_chunks() for c in table.columns]
        block = CsvBlock(self._next_row, cells, {}, widths)
        self._next_row += table.num_rows
        return block

    def _exact_rows(self) -> Iterator[list[str]]:
        return csv.reader(exact_lines(self._source), delimiter=self._delimiter)

    def _exact_blocks(self, rows: Iterator[list[str]]) -> Iterator[CsvBlock]:
        while batch := list(islice(rows, EXACT_BATCH_ROWS)):
            block = self._exact_block(batch)
            if block is not None:
                yield block

    def _exact_block(self, rows: list[list[str]]) -> CsvBlock | None:
        """csv.reader's rows as a block, like `CsvLayout.record`: blank rows skipped, a row of
        the wrong width padded or cut and its reason kept; None when all were blank."""
        rows = [row for row in rows if row]
        if not rows:
            return None
        width, malformed = len(self._header or ()), {}
        for i, row in enumerate(rows):
            if len(row) != width:
                malformed[i] = ragged_reason(row, width)
                rows[i] = [*row[:width], *([""] * (width - len(row)))]
        cells = [pa.array(column, pa.string()) for column in zip(*rows, strict=True)]
        block = CsvBlock(self._next_row, cells, malformed)
        self._next_row += len(rows)
        self.exact_blocks += 1
        return block
