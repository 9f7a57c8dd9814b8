"""A CSV file cut at a line boundary into byte ranges that can be remediated side by side.

Only files whose rows are one line each can be cut safely; that is checked cheaply, and any
doubt means "do not cut" (`SplitUnsafe`, or `plan_halves` returning None):
- the parent counts the rows of the first range from its bytes, and refuses when it holds a
  blank line or a lone `\\r` (where counting newlines and csv.reader would disagree);
- each range is read with a strict csv.reader, which raises on a quoted field still open at
  the end of the range, and whose line count must equal its row count (no quoted newlines).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from remediation.readers import CSV_FIELD_LIMIT, CsvLayout

BLOCK = 1 << 20
SAMPLE = 64 * 1024


class SplitUnsafe(Exception):
    """The file cannot be cut here; the caller remediates it in one piece."""


@dataclass(frozen=True, slots=True)
class Halves:
    header: tuple[str, ...]
    ranges: tuple[tuple[int, int], tuple[int, int]]
    first_rows: tuple[int, int]  # number of the first row of each range


def estimated_rows(path: Path) -> int:
    """Rows in the file, estimated from the line length of its first 64 KiB."""
    with open(path, "rb") as handle:
        sample = handle.read(SAMPLE)
    lines = sample.count(b"\n")
    return path.stat().st_size * lines // max(len(sample), 1)


def plan_halves(path: Path, delimiter: str, header: Sequence[str] | None) -> Halves | None:
    """Two byte ranges of data rows, or None when the file cannot be cut cheaply and safely."""
    with open(path, "rb") as handle:
        head = handle.readline()
        names = _header_cells(head, delimiter)
        if names is None:
            return None
        start, size = len(head), path.stat().st_size
        handle.seek(start + (size - start) // 2)
        handle.readline()  # the rest of the line the middle falls into
        middle = handle.tell()
        if not start < middle < size:
            return None
        rows = _count_rows(handle, start, middle)
    if rows is None:
        return None
    if header is not None and len(header) == len(names):
        names = list(header)
    return Halves(tuple(names), ((start, middle), (middle, size)), (1, rows + 1))


def _header_cells(line: bytes, delimiter: str) -> list[str] | None:
    if b'"' in line or not line.endswith(b"\n"):
        return None
    text = line.decode("utf-8-sig", errors="replace")
    return next(csv.reader([text], delimiter=delimiter), None)


def _count_rows(handle: io.BufferedReader, start: int, end: int) -> int | None:
    """Lines in [start, end), or None if a blank line or a lone CR makes that not the rows."""
    handle.seek(start)
    rows, left, previous = 0, end - start, b"\n"
    while left > 0:
        block = handle.read(min(BLOCK, left))
        if not block:
            return None
        left -= len(block)
        joined = previous[-1:] + block
        if b"\n\n" in joined or b"\n\r\n" in joined or b"\r\r" in joined:
            return None
        if joined.count(b"\r") != (joined + b"\n").count(b"\r\n"):
            return None  # a CR not followed by LF (the LF may start the next block)
        rows += block.count(b"\n")
        previous = block
    return rows


def range_lines(path: Path, start: int, end: int) -> Iterator[str]:
    """The text lines of [start, end), decoded block by block (blocks end at a newline)."""
    with open(path, "rb") as handle:
        handle.seek(start)
        left, carry = end - start, b""
        while left > 0 or carry:
            block = handle.read(min(BLOCK, left)) if left > 0 else b""
            left -= len(block)
            data = carry + block
            cut = data.rfind(b"\n") + 1 if left > 0 else len(data)
            carry = data[cut:]
            yield from io.StringIO(data[:cut].decode("utf-8"), newline="")
            if not block:
                break


class RangeRows:
    """The data rows of one byte range, in batches, as `CsvRecords.row_batches` gives them."""

    def __init__(self, path: Path, span: tuple[int, int], header: Sequence[str], delimiter: str):
        self.path, self.span, self.delimiter = path, span, delimiter
        self.layout = CsvLayout.from_header(header)
        self.rows = 0

    def row_batches(self, size: int = 4096) -> Iterator[tuple[CsvLayout, list[list[str]]]]:
        if csv.field_size_limit() < CSV_FIELD_LIMIT:
            csv.field_size_limit(CSV_FIELD_LIMIT)
        lines = range_lines(self.path, *self.span)
        reader = csv.reader(lines, delimiter=self.delimiter, strict=True)
        seen = 0
        try:
            while batch := list(islice(reader, size)):
                seen += len(batch)
                if not all(batch):
                    batch = [row for row in batch if row]
                self.rows += len(batch)
                if batch:
                    yield self.layout, batch
        except csv.Error as exc:
            raise SplitUnsafe(f"range {self.span}: {exc}") from exc
        if reader.line_num != seen:
            raise SplitUnsafe(f"range {self.span}: a quoted field spans lines")
