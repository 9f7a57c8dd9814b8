"""CSV text as csv.reader is given it: a file's last line, ending in no line break, with one
when it leaves a quote open (`open_at_end`). Every CSV reader (`readers.CsvRecords`, and the
columns of `core.csvread`) gives its lines through here, so they read the same rows."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def open_at_end(line: str) -> str:
    """The file's last line, ending in no line break: with one when it leaves a quote open
    (an odd number of quotes), so that the quoted field holds it, as a quote left open
    anywhere else does (a line break in a field: the row refused, "a quote left open?").
    Read as it was, csv.reader closed the field at the end of the file: a file cut off in
    `"600` was billed 6."""
    return line + "\n" if line.count('"') % 2 else line


def closed_at_end(lines: Iterable[str]) -> Iterator[str]:
    """`lines`, the last one through `open_at_end` when it ends in no line break."""
    last = None
    for line in lines:
        if last is not None:
            yield last
        last = line
    if last is not None:
        yield last if last.endswith(("\n", "\r")) else open_at_end(last)
