"""JSON Lines lines split as bytes by Arrow (`core.jsonllines`) are the lines the line reader
(`jsonreaders.jsonl_lines`) reads from the same bytes: row numbers, text, refusals, and a
failure where the bytes are not UTF-8; the line reader takes over where a block is unusual."""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediation import jsonreaders
from remediation.core import jsonllines
from remediation.core.jsonllines import line_arrays
from remediation.jsonreaders import text_stream
from tests.fuzz import fuzz_settings

Line = tuple[int, str, str | None]

# Pieces of lines: mostly what a plain file holds (split as bytes), now and then what makes
# the line reader read otherwise (line ends, whitespace, characters beyond ASCII).
PLAIN = ['{"identifier":"a","timestamp":1}', "{}", "a", "7", "x" * 40, "\n", "\n"]
UNUSUAL = [
    '{"identifier":"ü€𝄞"}',
    "\r",
    "\r\n",
    " ",
    "\t",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1f",
    "\x85",  # NEL: whitespace to str.strip
    "\xa0",
    "\u2028",
    "\u3000",
    "\ufeff",  # a BOM past the start is a character (not whitespace)
    "é",
]


def by_line_reader(data: bytes) -> list[Line] | type[Exception]:
    try:
        return list(jsonreaders.jsonl_lines(text_stream(io.BytesIO(data))))
    except UnicodeDecodeError:
        return UnicodeDecodeError


def by_arrays(data: bytes) -> list[Line] | type[Exception]:
    found: list[Line] = []
    try:
        for block in line_arrays(text_stream(io.BytesIO(data))):
            block.text.validate(full=True)  # UTF-8 in every line
            lines = block.text.to_pylist()
            assert len(block.numbers) == len(lines)
            found += [
                (n, line, block.refused.get(at))
                for at, (n, line) in enumerate(zip(block.numbers, lines, strict=True))
            ]
    except UnicodeDecodeError:
        return UnicodeDecodeError
    return found


@fuzz_settings(250)
@given(
    pieces=st.lists(st.sampled_from(PLAIN), max_size=40),
    unusual=st.lists(st.tuples(st.sampled_from(UNUSUAL), st.integers(0, 40)), max_size=2),
    bom=st.booleans(),
    broken=st.sampled_from([b""] * 5 + [b"\xff", b"\xc3", b"\xed\xa0\x80"]),
    at=st.integers(0, 40),
    block=st.integers(1, 64),
    most=st.sampled_from([30, 45] + [10_000] * 4),
)
def test_fuzz_lines_split_as_bytes_are_the_lines_the_line_reader_reads(
    pieces: list[str],
    unusual: list[tuple[str, int]],
    bom: bool,
    broken: bytes,
    at: int,
    block: int,
    most: int,
) -> None:
    """Plain lines with a few unusual pieces put in, so that every one of them is met by the
    split as bytes too, not only by the line reader after an earlier one."""
    for piece, place in unusual:
        pieces.insert(min(place, len(pieces)), piece)
    data = "".join(pieces).encode()
    if broken:  # a byte sequence that is not UTF-8, somewhere
        cut = min(at * 3, len(data))
        data = data[:cut] + broken + data[cut:]
    if bom:
        data = b"\xef\xbb\xbf" + data
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jsonllines, "LINE_BLOCK_BYTES", block)
        patch.setattr(jsonreaders, "MAX_LINE_CHARS", most)
        assert by_arrays(data) == by_line_reader(data)


@pytest.mark.parametrize("piece", UNUSUAL)
@pytest.mark.parametrize("block", [1, 5, 64, 1 << 20])
def test_every_unusual_piece_in_every_place_reads_as_the_line_reader_reads_it(
    piece: str, block: int
) -> None:
    plain = ['{"identifier":"a"}', "x" * 40, "{}"] * 3
    for place in range(len("".join(plain)) + 1):
        text = "\n".join(plain)
        data = (text[:place] + piece + text[place:] + "\n").encode()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(jsonllines, "LINE_BLOCK_BYTES", block)
            assert by_arrays(data) == by_line_reader(data), (piece, place)


@pytest.mark.parametrize("block", [1, 5, 64, 1 << 20])
@pytest.mark.parametrize("most", [20, 40, 41])
def test_lines_past_the_limit_are_refused_as_the_line_reader_refuses_them(
    block: int, most: int
) -> None:
    # a line of 41 characters with its "\n", a last one of 40 without
    data = ("{}\n" * 5 + "x" * 40 + "\n" + "{}\n" * 5 + "y" * 40).encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jsonllines, "LINE_BLOCK_BYTES", block)
        patch.setattr(jsonreaders, "MAX_LINE_CHARS", most)
        got = by_arrays(data)
        assert got == by_line_reader(data)
    assert isinstance(got, list) and [n for n, _, why in got if why] == (
        [6, 12] if most == 20 else [6] if most == 40 else []
    )


def handed_over(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The data each hand-over to the line reader started with."""
    seen: list[bytes] = []
    original = jsonllines._rest

    def rest(data: bytes, *args: Any, **kwargs: Any) -> Any:
        seen.append(data)
        return original(data, *args, **kwargs)

    monkeypatch.setattr(jsonllines, "_rest", rest)
    return seen


def test_a_plain_file_is_split_as_bytes_to_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = handed_over(monkeypatch)
    monkeypatch.setattr(jsonllines, "LINE_BLOCK_BYTES", 100)
    body = [f'{{"identifier":"e{i}","value":"ü{i}"}}' for i in range(50)]
    data = ("\ufeff" + "\n".join(body) + "\n\n").encode()  # a BOM, a blank line at the end
    blocks = list(line_arrays(text_stream(io.BytesIO(data))))
    assert seen == []
    assert len(blocks) > 10  # many blocks, each cut at a line's end
    assert [line for b in blocks for line in b.text.to_pylist()] == body
    assert [n for b in blocks for n in b.numbers] == list(range(1, 51))


def test_the_line_reader_takes_over_from_the_first_unusual_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A line with a carriage return, half-way: the blocks before it are split as bytes,
    the rest of the stream (that block on) is read by the line reader, numbering on."""
    seen = handed_over(monkeypatch)
    monkeypatch.setattr(jsonllines, "LINE_BLOCK_BYTES", 64)
    body = [f'{{"identifier":"e{i:02d}"}}' for i in range(40)]
    data = ("\n".join(body[:20]) + "\r\n" + "\n".join(body[20:]) + "\n").encode()
    got = by_arrays(data)
    assert got == by_line_reader(data)
    assert got == [(i + 1, line, None) for i, line in enumerate(body)]
    assert len(seen) == 1 and seen[0].startswith(b'{"identifier":"e1')  # block of e19 on


def test_a_long_line_is_refused_by_the_line_reader_and_the_rest_read_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jsonllines, "LINE_BLOCK_BYTES", 64)
    monkeypatch.setattr(jsonreaders, "MAX_LINE_CHARS", 500)
    data = b'{"a":1}\n' * 20 + b'{"a":"' + b"x" * 2000 + b'"}\n' + b'{"a":2}\n' * 5
    got = by_arrays(data)
    assert got == by_line_reader(data)
    assert isinstance(got, list) and got[20][0] == 21 and got[20][2] is not None
    assert got[20][2].startswith("line is 2009 characters long")
    assert [line for _, line, _ in got[21:]] == ['{"a":2}'] * 5


def test_bytes_that_are_not_utf8_past_the_first_block_fail_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jsonllines, "LINE_BLOCK_BYTES", 64)
    data = b'{"a":1}\n' * 50 + b'{"a":"\xff"}\n' + b'{"a":1}\n' * 5
    with pytest.raises(UnicodeDecodeError):
        by_arrays_raising(data)


def by_arrays_raising(data: bytes) -> None:
    for _ in line_arrays(text_stream(io.BytesIO(data))):
        pass


def test_a_read_that_stops_short_changes_nothing() -> None:
    """A stream that hands out a few bytes per read (a socket, a pipe) reads the same."""

    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data, self.at = data, 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            piece = self.data[self.at : self.at + 3]
            buffer[: len(piece)] = piece
            self.at += len(piece)
            return len(piece)

    data = b"\xef\xbb\xbf" + b'{"identifier":"e"}\n' * 30 + b'{"last":1}'
    stream = io.TextIOWrapper(Trickle(data), encoding="utf-8-sig", newline="")  # type: ignore[arg-type]
    got = [line for block in line_arrays(stream) for line in block.text.to_pylist()]
    assert got == ['{"identifier":"e"}'] * 30 + ['{"last":1}']
