"""`CsvColumns` gives exactly the rows (and errors) of `CsvRecords.row_batches`, mostly fast.

Every test compares with today's reader on the same bytes, so a case pyarrow reads differently
from csv.reader shows up as a difference, whichever path read it.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Sequence
from typing import BinaryIO

import pyarrow as pa
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from remediation.core.csvread import CsvColumns
from remediation.core.csvsource import TEXT_CHUNK
from remediation.core.textmeasures import CONTROL_CLASS
from remediation.csvtext import closed_at_end
from remediation.errors import UnreadableFile
from remediation.readers import CSV_FIELD_LIMIT, CsvRecords, header_row, text_stream
from tests.fuzz import fuzz_settings

Row = tuple[int, list[str], str | None]
Outcome = tuple[tuple[str, ...] | None, list[Row]] | str


def today(data: bytes, delimiter: str = ",", header: Sequence[str] | None = None) -> Outcome:
    """What `CsvRecords.row_batches` + `CsvLayout.record` give: (header, rows) or the error."""
    try:
        rows: list[Row] = []
        for layout, batch in CsvRecords(io.BytesIO(data), delimiter, header).row_batches():
            width = len(layout.header)
            for row in batch:
                malformed = layout.record(len(rows) + 1, row).malformed
                cells = [*row[:width], *([""] * (width - len(row)))]
                rows.append((len(rows) + 1, cells, malformed))
    except UnreadableFile as exc:
        return str(exc)
    return _today_header(data, delimiter, header), rows


def _today_header(
    data: bytes, delimiter: str, header: Sequence[str] | None
) -> tuple[str, ...] | None:
    """The header `row_batches` reads (it hands out only its layout, of stripped names): the
    first row that is not blank."""
    first = header_row(
        csv.reader(closed_at_end(text_stream(io.BytesIO(data))), delimiter=delimiter)
    )
    if first is None:
        return None
    same_width = header is not None and len(header) == len(first)
    return tuple(header) if header is not None and same_width else tuple(first)


def columns(
    data: bytes | BinaryIO,
    delimiter: str = ",",
    header: Sequence[str] | None = None,
    block_bytes: int = 1 << 20,
) -> tuple[Outcome, CsvColumns]:
    """What `CsvColumns` gives, in the shape of `today`, and the reader (for its counters)."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    reader = CsvColumns(stream, delimiter, header, block_bytes)
    try:
        found = reader.read_header()
        rows: list[Row] = []
        for block in reader.blocks():
            assert all(c.type == pa.string() and len(c) == block.rows for c in block.cells)
            assert not any(c.null_count for c in block.cells)
            assert block.first_row == len(rows) + 1
            values = [cells.to_pylist() for cells in block.cells]
            assert_within_widths(values, block.widths)
            for i in range(block.rows):
                rows.append((block.first_row + i, [v[i] for v in values], block.malformed.get(i)))
    except UnreadableFile as exc:
        return str(exc), reader
    return (found, rows), reader


def assert_within_widths(values: list[list[str]], widths: list[int] | None) -> None:
    """A block's widths, when measured, bound its cells' bytes, and its cells hold no control
    character (what the field-limit checks then skip: `csvwidths`)."""
    if widths is None:
        return
    assert len(widths) == len(values)
    for cells, width in zip(values, widths, strict=True):
        assert all(len(cell.encode()) <= width for cell in cells)
        assert not any(re.search(CONTROL_CLASS, cell) for cell in cells)


def assert_same(
    data: bytes, delimiter: str = ",", header: Sequence[str] | None = None, block_bytes: int = 32
) -> CsvColumns:
    expected = today(data, delimiter, header)
    found, reader = columns(data, delimiter, header, block_bytes)
    assert found == expected
    return reader


# --- differential property tests ----------------------------------------------------------------

TEXT_ALPHABET = list('aaé,,;\t""\n\n\r \ufeff\0')  # doubled: drawn twice as often
BYTE_TOKENS = [b"a", b",", b'"', b"\n", b"\r", "é".encode(), b"\xff", b"\xc3", b"\xed\xa0\x80"]


@st.composite
def csv_texts(draw: st.DrawFn) -> tuple[bytes, str, list[str] | None, int]:
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    width = draw(st.integers(1, 4))
    names = delimiter.join(f"h{i}" for i in range(width))
    first = draw(st.one_of(st.just(names + "\n"), st.text(st.sampled_from(TEXT_ALPHABET))))
    body = draw(st.text(st.sampled_from(TEXT_ALPHABET), max_size=300))
    bom = draw(st.sampled_from(["", "", "\ufeff"]))
    repaired = draw(st.sampled_from([None, [f"r{i}" for i in range(width)]]))
    return (bom + first + body).encode(), delimiter, repaired, draw(st.integers(1, 64))


QUOTED_PIECES = ["a", "é", " ", '""', ",", ";", "\n", "\r", "\r\n", "\ufeff"]


@st.composite
def csv_rows(draw: st.DrawFn) -> tuple[bytes, str, int]:
    """Rows of mostly the header's width, fields plain or quoted, a few stray quotes."""
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    width = draw(st.integers(1, 3))
    plain = st.text(st.sampled_from(["a", "é", " ", "\ufeff"]), max_size=4)
    quoted = st.lists(st.sampled_from(QUOTED_PIECES), max_size=4).map(lambda p: f'"{"".join(p)}"')
    stray = st.lists(st.sampled_from([*QUOTED_PIECES, '"']), max_size=4).map("".join)
    field = (
        st.one_of(plain, plain, quoted, stray) if draw(st.booleans()) else st.one_of(plain, quoted)
    )
    row = st.lists(field, min_size=width - 1, max_size=width + 1).map(delimiter.join)
    ends = st.sampled_from(["\n", "\n", "\r\n", "\r", "\n\n"])
    lines = draw(st.lists(st.tuples(row, ends).map("".join), max_size=30))
    head = delimiter.join(f"h{i}" for i in range(width)) + "\n"
    return (head + "".join(lines)).encode(), delimiter, draw(st.integers(1, 40))


@fuzz_settings(400)
@given(csv_rows())
def test_fuzz_same_rows_as_today_on_csv_like_rows(case: tuple[bytes, str, int]) -> None:
    data, delimiter, block_bytes = case
    reader = assert_same(data, delimiter, block_bytes=block_bytes)
    paths = {(1, 0): "pyarrow", (0, 1): "csv.reader", (1, 1): "both", (0, 0): "none"}
    event("blocks read by", paths[min(reader.fast_blocks, 1), min(reader.exact_blocks, 1)])


@fuzz_settings(400)
@given(csv_texts())
def test_fuzz_same_rows_as_today(case: tuple[bytes, str, list[str] | None, int]) -> None:
    data, delimiter, repaired, block_bytes = case
    assert_same(data, delimiter, repaired, block_bytes)


@fuzz_settings(200)
@given(
    st.lists(st.sampled_from(BYTE_TOKENS), max_size=200),
    st.sampled_from([b"h0,h1\n", b"h0\n", b""]),
    st.integers(1, 48),
)
def test_fuzz_same_rows_or_error_on_raw_bytes(tokens: list[bytes], head: bytes, size: int) -> None:
    assert_same(head + b"".join(tokens), block_bytes=size)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 3 * TEXT_CHUNK), st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82"]))
def test_undecodable_byte_reported_at_todays_offset(at: int, bad: bytes) -> None:
    """io.TextIOWrapper counts the offset from its chunk's start: the exact path must too."""
    rows = b"".join(b"%d,\xc3\xa9\xe2\x82\xac%d\n" % (i, i) for i in range(4000))
    data = b"\xef\xbb\xbfa,b\n" + rows
    at = data.index(b"\n", at) + 1  # a line start, so the rows before it stay valid
    for block_bytes in (1000, 4096, 1 << 20):
        assert_same(data[:at] + b"x" + bad + data[at:], block_bytes=block_bytes)
        assert_same(data[:at] + bad + b"\n" + data[at:], block_bytes=block_bytes)


# --- examples, one per case -----------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_plain_file_is_read_fast(delimiter: str) -> None:
    data = "\n".join(delimiter.join(f"{r}x{c}" for c in range(3)) for r in range(50)).encode()
    reader = assert_same(data, delimiter, block_bytes=64)
    assert reader.fast_blocks > 5 and reader.exact_blocks == 0


@pytest.mark.parametrize(
    "data",
    [
        b"\xef\xbb\xbfa,b\r\n1,2\r\n\r\n3,4\r\n",  # BOM, \r\n, a blank line
        b"a,b\n1,2\n3,4",  # last line without a line end
        b"a,b\r1,2\r\r3,4\r",  # lone \r line ends
        b'a,b\n"x\ry",1\n"x\r\ny","2\n"\n"",""\n',  # quoted line breaks, empty quoted fields
        b'a,b\n"q""",""""\n"a,b",c\n',  # doubled quotes, a quoted delimiter
        b"a,b\n\n\n\n1,2\n\n",  # blank lines are no rows
        b"a,b\n1\n1,2,3\n,\n",  # ragged rows: padded or cut, with their reason
        b'a,b\n1,"x\ny\n',  # a quote left open swallows the lines after it
        b'h\na"\n"b\nc\n"\nd\n',  # even quotes, yet a block may end inside a quoted field
        b'h\n"a"b\n"c"\n',  # text after a closing quote
        b'a,b\n5" pipe,1\n"a"b,2\n x ,"3"\n',  # quotes csv.reader keeps as text
        b'a,"b\nc"\n1,2\n',  # a quote in the header
        b"\n1,2\n",  # a blank first line: a header of no column
        b"a,b\n\xef\xbb\xbf1,2\n",  # a BOM opening a data block is text
        b"a,a\n1,2\n",  # an ambiguous header
        b"a,a\n\xff\n",  # today's decoder fails before the header is judged
        b"\xef\xbb",  # part of a BOM: an empty file to utf-8-sig
        b"",
        b"a,b",
    ],
)
@pytest.mark.parametrize("block_bytes", [1, 5, 16, 1 << 20])
def test_examples_match_today(data: bytes, block_bytes: int) -> None:
    assert_same(data, block_bytes=block_bytes)


def test_ragged_block_is_read_exactly_then_fast_again() -> None:
    rows = [f"{i},{i}" for i in range(200)]
    rows[100] = "1,2,3"
    reader = assert_same(("a,b\n" + "\n".join(rows) + "\n").encode(), block_bytes=100)
    assert reader.exact_blocks == 1 and reader.fast_blocks > 10


def test_quoted_field_across_a_cut_stays_fast() -> None:
    rows = "".join(f'{i},"line\n{i}"\n' for i in range(100))
    reader = assert_same(f"a,b\n{rows}".encode(), block_bytes=20)
    assert reader.exact_blocks == 0


@pytest.mark.parametrize(
    "head",
    [b'"a",b\n', b'"a","b"\r\n', b'"a""",b\n', b'"a"b",c\n', b'"a",b\r', b'\xef\xbb\xbf"a",b\n'],
)
def test_header_with_quotes_is_read_by_csv_reader_and_the_rows_fast(head: bytes) -> None:
    """Exporters that quote every field quote the names too: the header line is csv.reader's,
    the rows after it go to pyarrow as in any file."""
    rows = "".join(f'"{i}","x{i}"\n' for i in range(100))
    reader = assert_same(head + rows.encode(), block_bytes=64)
    assert reader.fast_blocks > 5 and reader.exact_blocks == 0


@pytest.mark.parametrize(
    ("head", "exact"), [(b'a,"b\nc"\n', 1), (b'"a,b\n', 0), (b'"a","b\r\n', 0)]
)
def test_header_whose_quotes_do_not_close_on_its_line_is_read_exactly(
    head: bytes, exact: int
) -> None:
    """csv.reader reads the whole file (a quote left open swallows every line after it)."""
    reader = assert_same(head + b"1,2\n3,4\n", block_bytes=4)
    assert reader.fast_blocks == 0 and reader.exact_blocks == exact


@pytest.mark.parametrize("extra", [0, 1])
def test_field_at_the_limit_is_read_and_past_it_fails(extra: int) -> None:
    field = b"y" * (CSV_FIELD_LIMIT + extra)
    data = b'a,b\n1,2\n3,"' + field + b'"\n5,6\n'
    expected = today(data)
    found, _ = columns(data, block_bytes=1 << 16)
    assert found == expected
    assert isinstance(found, str) == bool(extra)


class OneWayStream(io.RawIOBase):
    """A pipe: not seekable, and each read gives at most a few bytes."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(min(len(buffer), 7))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_unseekable_stream_with_short_reads() -> None:
    rows = [b'%d,"x\ny"\n' % i if i % 50 else b"%d\n" % i for i in range(200)]
    data = b"a,b\n" + b"".join(rows)
    found, reader = columns(OneWayStream(data), block_bytes=40)  # type: ignore[arg-type]
    assert found == today(data)
    assert reader.fast_blocks > 0 and reader.exact_blocks > 0


def test_bad_delimiter_fails_as_today() -> None:
    with pytest.raises(TypeError):
        today(b"a,b\n", "ab")
    with pytest.raises(TypeError):
        columns(b"a,b\n", "ab")


def test_large_file_mostly_fast() -> None:
    lines = [f'{i},cus_{i % 97},"x, {i}",{i * 7 % 1000}.5,ok' for i in range(200_000)]
    lines[1234] += ",extra"
    data = ("identifier,customer,note,value,status\n" + "\n".join(lines) + "\n").encode()
    reader = assert_same(data, block_bytes=1 << 16)
    assert reader.fast_blocks >= 9 * reader.exact_blocks and reader.exact_blocks == 1


def seven_columns(rows: int) -> bytes:
    head = "identifier,timestamp,event_name,payload_value,payload_customer,error_code,note\n"
    body = "".join(
        f"id_{i},{1700000000 + i},api_call,{i % 1000},cus_{i % 5000},invalid,ok-{i % 7}\n"
        for i in range(rows)
    )
    return (head + body).encode()


if __name__ == "__main__":  # time 1,000,000 rows of 7 short columns, one thread
    data = seven_columns(1_000_000)
    started = time.perf_counter()
    reader = CsvColumns(io.BytesIO(data), ",", None)
    total = sum(block.rows for block in reader.blocks())
    took = time.perf_counter() - started
    print(f"{total} rows, {len(data) / 1e6:.0f} MB: CsvColumns {took:.2f} s", end=", ")
    print(f"{reader.fast_blocks} fast / {reader.exact_blocks} exact blocks", end=", ")
    started = time.perf_counter()
    count = sum(len(b) for _, b in CsvRecords(io.BytesIO(data), ",", None).row_batches())
    print(f"row_batches {time.perf_counter() - started:.2f} s ({count} rows)")


@pytest.mark.parametrize(
    ("body", "widths"),
    [
        (b"a,bb,ccc\n1,22,3333\n", [1, 2, 4]),
        (b"a,bb,ccc\r\n1,22,333\r\n", [1, 2, 3]),
        (b"\na,bb,ccc\n", [1, 2, 3]),  # the line feed of a header ending in "\r\n"
        (b'a,"b,b",ccc\n1,22,333', [1, 3, 3]),  # no line end at the end
        (b'a,"b""b",\xc3\xa9\n', [1, 3, 2]),  # bytes, not characters
        (b'a,"b\nb",c\n', None),  # a line break inside a cell
        (b"a,b\x01b,c\n", None),  # a control character
        (b"a,\xe2\x80\xa8,c\n", None),  # U+2028
        (b"a,\xe2\x82\xac,c\n", None),  # the euro sign: not measured either (0xE2)
        (b"a,b\x7f,c\n", None),  # DEL
        (b"a,b,c\n\n1,2,3\n", None),  # a blank line
        (b"a,b,c\r1,2,3\n", None),  # a carriage return alone
        (b'a,"b\r",c\n', None),
        (b"a\tbb\tc\n1\t2\t3\n", [1, 2, 1]),  # tab-separated (the delimiter a control byte)
        (b'a\t"b\tb"\tc\n', None),  # a tab inside a cell
        (b'a\t"b\x0bb"\tc\n', None),
    ],
)
def test_a_blocks_widths_are_read_off_its_bytes(body: bytes, widths: list[int] | None) -> None:
    """The widest cell of each column, in bytes, when no cell can hold a control character."""
    delimiter = "\t" if b"\t" in body else ","
    head = delimiter.join(["h0", "h1", "h2"]).encode() + b"\n"
    reader = CsvColumns(io.BytesIO(head + body), delimiter, None, 1 << 20)
    assert reader.read_header() is not None
    (block,) = list(reader.blocks())
    assert reader.fast_blocks == 1
    assert block.widths == widths


def test_a_block_holds_at_most_its_lines_whatever_their_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A block was cut by bytes only: 1M rows of one cell (`x`, 2 MB under a 6-column header)
    were one block, a million Python lists, padded rows and reasons at once (607 MB for
    `meterfix remediate`). Blocks hold at most `MAX_BLOCK_LINES` lines; the rows, their
    numbers and reasons are csv.reader's, as before (a quoted line break is not cut)."""
    from remediation.core import csvread

    data = b"a,b,c,d,e,f\n" + b"x\n" * 3000 + b'"q\nr",2\n' + b"y,1,2,3,4,5\n" * 3000
    whole, _ = columns(data)
    assert whole == today(data)
    monkeypatch.setattr(csvread, "MAX_BLOCK_LINES", 1000)
    cut, _ = columns(data)
    assert cut == whole
    sizes = [block.rows for block in CsvColumns(io.BytesIO(data), ",", None).blocks()]
    assert max(sizes) <= 1000 and sum(sizes) == 6001
