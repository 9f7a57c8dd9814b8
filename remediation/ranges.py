"""A CSV file cut at a line boundary into byte ranges that can be remediated side by side.

Only files whose rows are one line each can be cut safely; that is checked cheaply, and any
doubt means "do not cut" (`SplitUnsafe`, or `plan_halves` returning None):
- the parent counts the rows of the first range from its bytes (for the row numbers of the
  second), and refuses when it holds a blank line or a lone `\\r` (where counting newlines and
  csv.reader would disagree);
- each range is read with a strict csv.reader, which raises on a quoted field still open at
  the end of the range, and whose line count must equal its row count (no quoted newlines).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from remediation.readers import CSV_FIELD_LIMIT, CsvLayout

BLOCK = 1 << 20
SAMPLE = 64 * 1024


class SplitUnsafe(Exception):
    """The file cannot be cut here; the caller remediates it in one piece."""


@dataclass(frozen=True, slots=True)
class Cut:
    """Data rows in [start, middle) and [middle, end); `header` as the reader takes it."""

    header: tuple[str, ...]
    start: int
    middle: int
    end: int


def estimated_rows(path: Path) -> int:
    """Rows in the file, estimated from the line length of its first 64 KiB."""
    with open(path, "rb") as handle:
        sample = handle.read(SAMPLE)
    lines = sample.count(b"\n")
    return path.stat().st_size * lines // max(len(sample), 1)


def plan_cut(
    path: Path, delimiter: str, header: Sequence[str] | None, share: float = 0.5
) -> Cut | None:
    """Where to cut the data rows (`share` of the bytes first), or None when the header
    might span lines. Whether the rows can be counted is `count_rows`' question."""
    with open(path, "rb") as handle:
        head = handle.readline()
        names = _header_cells(head, delimiter)
        if names is None:
            return None
        start, size = len(head), path.stat().st_size
        handle.seek(start + int((size - start) * share))
        handle.readline()  # the rest of the line the cut falls into
        middle = handle.tell()
    if not start < middle < size:
        return None
    if header is not None and len(header) == len(names):
        names = list(header)
    return Cut(tuple(names), start, middle, size)


def _header_cells(line: bytes, delimiter: str) -> list[str] | None:
    if b'"' in line or not line.endswith(b"\n"):
        return None
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None  # the single pass says what is wrong with the file
    return next(csv.reader([text], delimiter=delimiter), None)


def count_rows(path: Path, start: int, end: int) -> int | None:
    """Lines in [start, end), or None if a blank line or a lone CR makes that not the rows."""
    with open(path, "rb") as handle:
        return _count_rows(handle, start, end)


def _count_rows(handle: io.BufferedReader, start: int, end: int) -> int | None:
    rows = 0
    for block in _blocks(handle, start, end):
        lines, returns = block.count(b"\n"), block.count(b"\r")
        if block[:1] == b"\n" or block[:2] == b"\r\n" or b"\n\n" in block:
            return None  # a blank line (blocks start at a line start)
        if returns and (returns != lines or block.count(b"\r\n") != lines):
            return None  # not every line ends in CRLF: let csv.reader split the lines
        if returns and b"\n\r\n" in block:
            return None
        rows += lines
    return rows


def _blocks(handle: io.BufferedReader, start: int, end: int) -> Iterator[bytes]:
    """[start, end) in blocks that each end with a newline (`end` follows one)."""
    handle.seek(start)
    left, carry = end - start, b""
    while left > 0:
        block = handle.read(min(BLOCK, left))
        if not block:
            return
        left -= len(block)
        data = carry + block
        cut = data.rfind(b"\n") + 1 if left > 0 else len(data)
        carry = data[cut:]
        if cut:
            yield data[:cut]


def block_rows(text: str, delimiter: str) -> list[list[str]]:
    """The non-blank rows of whole lines of CSV text, as csv.reader reads them.

    A line without a quote is split at the delimiter (much cheaper than csv.reader, and the
    same for such a line); the lines with quotes go through one strict csv.reader, which must
    read exactly one line per row. Text with a lone CR goes entirely through csv.reader.
    """
    returns = text.count("\r")
    if returns and (returns != text.count("\n") or returns != text.count("\r\n")):
        return _csv_rows(io.StringIO(text, newline=""), delimiter)
    lines = [line for line in text.split("\r\n" if returns else "\n") if line]
    rows: list[list[str] | None] = [
        None if '"' in line else line.split(delimiter) for line in lines
    ]
    quoted = [line for line in lines if '"' in line]
    if not quoted:
        return rows  # type: ignore[return-value]  # no None without a quoted line
    parsed = iter(_csv_rows(quoted, delimiter, len(quoted)))
    return [row if row is not None else next(parsed) for row in rows]


def _csv_rows(lines: Iterable[str], delimiter: str, expected: int | None = None) -> list[list[str]]:
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise SplitUnsafe(str(exc)) from exc  # a quoted field still open at the end, or odd
    if reader.line_num != len(rows) or (expected is not None and len(rows) != expected):
        raise SplitUnsafe("a quoted field spans lines")
    return [row for row in rows if row]


class RangeRows:
    """The data rows of one byte range, in batches, as `CsvRecords.row_batches` gives them."""

    def __init__(self, path: Path, span: tuple[int, int], header: Sequence[str], delimiter: str):
        self.path, self.span, self.delimiter = path, span, delimiter
        self.layout = CsvLayout.from_header(header)
        self.rows = 0

    def row_batches(self, size: int = 4096) -> Iterator[tuple[CsvLayout, list[list[str]]]]:
        if csv.field_size_limit() < CSV_FIELD_LIMIT:
            csv.field_size_limit(CSV_FIELD_LIMIT)
        with open(self.path, "rb") as handle:
            for block in _blocks(handle, *self.span):
                rows = block_rows(block.decode("utf-8"), self.delimiter)
                self.rows += len(rows)
                for at in range(0, len(rows), size):
                    yield self.layout, rows[at : at + size]
