"""A JSON array read as batches of columns (`core.jsonarray`: element lines matched by the JSON
Lines layouts while the array has one element a line, the array reader after) gives exactly
what the array reader gives: the same records, column texts and refusals, and the same error
for a file it fails; and a JSON array written from lines is what the record writer writes."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remediation.core import jsonarray
from remediation.core.batch import from_records
from remediation.core.batchjoin import concat_batches
from remediation.core.jsonarray import Elements, json_array_batches
from remediation.engine import remediate
from remediation.errors import UnreadableFile
from remediation.filetypes import FileFormat
from remediation.jsonrecords import JsonArrayRecords
from remediation.meters import Meter
from remediation.rules import Rules
from tests.unit.remediation.test_jsonl_read import lines, objects, seen, texts

DEPTH = 32
NOW = 1_764_000_000


def read_both(data: bytes, size: int, block: int, depth: int = DEPTH) -> tuple[Any, Any]:
    """(what the batches read, what the array reader reads): the rows, or the error; the
    batches the same with the next one matched ahead on another thread."""
    try:
        records = list(JsonArrayRecords(io.BytesIO(data), depth))
        expected: Any = [seen(r) for r in records]
    except UnreadableFile as exc:
        expected, records = ("fails", str(exc)), []
    results = []
    for pool in (None, ThreadPoolExecutor(1)):
        ahead = None if pool is None else pool.submit
        try:
            with patch.object(jsonarray, "LINE_BLOCK_BYTES", block):
                source = JsonArrayRecords(io.BytesIO(data), depth)
                batches = list(json_array_batches(source, size, 3, ahead))
            got: Any = [seen(r) for b in batches for r in b.records()]
            if batches and records:  # the same text for every value, not only the same value
                assert texts(concat_batches(batches)) == texts(from_records(records))
        except UnreadableFile as exc:
            got = ("fails", str(exc))
        finally:
            if pool is not None:
                pool.shutdown()
        results.append(got)
    assert results[0] == results[1]
    return results[0], expected


PLAIN = st.one_of(
    st.sampled_from(["cus_1", "", "1,234", "ü€𝄞", "a:b,c", "x{y}]", "t r u e"]),
    st.integers(-(10**20), 10**20),
    st.sampled_from([0.5, -2.25, 3.0, 12345.678, 1e16, 1e-07]),  # 1e16: with an exponent
    st.booleans(),
    st.none(),
)
PLAIN_KEYS = st.sampled_from(["identifier", "timestamp", "event_name", "note", "ü", "a b", "c"])


@st.composite
def plain_objects(draw: Any) -> dict[str, Any]:
    """Objects of plain values, and a payload and an error of them: elements that qualify
    as json.dumps writes them, but for a float it writes with an exponent."""
    obj: dict[str, Any] = {k: draw(PLAIN) for k in draw(st.lists(PLAIN_KEYS, unique=True))}
    for nested in ("payload", "error"):
        if draw(st.booleans()):
            obj[nested] = {k: draw(PLAIN) for k in draw(st.lists(PLAIN_KEYS, unique=True))}
    return obj


ODD_ELEMENTS = st.one_of(
    lines(),  # JSON Lines lines: objects as json.dumps writes them (escapes too), odd ones
    objects().map(lambda obj: json.dumps(obj, indent=2)),  # an element over several lines
    st.sampled_from(
        [
            '{"a": NaN}',
            '{"a": 1e999}',
            '{"a": ' + "1" * 400 + ".5}",  # past a float's range, no exponent
            '{"a": ' + "9" * 5000 + "}",  # too long to read: a refused row
            '{"a": "\\ud800"}',
            '{"payload": {"v": 1, "v": 2}}',
            '{"c": 1, "c": 1}',
            '{"x": {"y": {"z": 1}}}',
            "{}",
            "  {\t}  ",
            "7",
            "[]",
        ]
    ),
)
ODD_SEPARATORS = [", ", " ,\n", ",\r\n", ",\n\n", "\n,", ",  \t\n", ",\n \n", ",\n\t", ","]
OPENINGS = st.sampled_from(
    ["[\n"] * 6 + ["[", " [ \n", "\ufeff[\n", "[\r\n", "\n[\n", "{\n", "[\n\n", "[]"]
)
CLOSINGS = st.sampled_from(["\n]\n", "\n]\n", "\n]", "]", "\n] x", "", ",\n]\n", "\n]\n\n  "])
STYLES = st.sampled_from([(",", ":"), (", ", ": ")])


@settings(max_examples=400, deadline=None)
@given(
    plain=st.lists(st.tuples(plain_objects(), STYLES), min_size=1, max_size=30),
    odd=st.lists(st.tuples(st.integers(0, 30), ODD_ELEMENTS), max_size=2),
    between=st.sampled_from([",\n", ",\n", ",", ", ", ",\r\n", "\t,\n  "]),
    separators=st.lists(st.tuples(st.integers(0, 30), st.sampled_from(ODD_SEPARATORS)), max_size=2),
    opening=OPENINGS,
    closing=CLOSINGS,
    size=st.integers(1, 40),
    block=st.sampled_from([1, 7, 64, 300, 1 << 18]),
)
def test_batches_read_what_the_array_reader_reads(
    plain: list[tuple[dict[str, Any], tuple[str, str]]],
    odd: list[tuple[int, str]],
    between: str,
    separators: list[tuple[int, str]],
    opening: str,
    closing: str,
    size: int,
    block: int,
) -> None:
    """Elements that qualify, with up to two others and two other separators among them, in
    arrays opened and closed in various ways, read in blocks of various sizes."""
    elements = [json.dumps(obj, ensure_ascii=False, separators=style) for obj, style in plain]
    for at, element in odd:
        elements.insert(at, element)
    gaps = [between] * (len(elements) - 1)
    for at, separator in separators:
        if at < len(gaps):
            gaps[at] = separator
    body = "".join(e + s for e, s in zip(elements, gaps, strict=False))
    text = opening + body + elements[-1] + closing
    got, expected = read_both(text.encode(), size, block)
    assert got == expected


@settings(max_examples=150, deadline=None)
@given(
    objs=st.lists(plain_objects(), min_size=1, max_size=30),
    indent=st.sampled_from([None, 0, 2, "\t"]),
    style=st.sampled_from([None, (",", ":")]),
    ascii_only=st.booleans(),
    size=st.integers(1, 40),
)
def test_arrays_as_json_dumps_writes_them_read_what_the_array_reader_reads(
    objs: list[dict[str, Any]],
    indent: int | str | None,
    style: tuple[str, str] | None,
    ascii_only: bool,
    size: int,
) -> None:
    text = json.dumps(objs, indent=indent, separators=style, ensure_ascii=ascii_only)
    got, expected = read_both(text.encode(), size, 1 << 18)
    assert got == expected


def _row(i: int) -> dict[str, Any]:
    return {
        "identifier": f"e{i}",
        "timestamp": NOW * 1000 + i,
        "event_name": "api_requests",
        "payload": {"stripe_customer_id": "cus_1", "value": i if i % 3 else f"{i},000"},
        "error": {"code": "timestamp_in_future", "message": "Timestamp is in the future."},
    }


def _array(rows: list[str]) -> bytes:
    return ("[\n" + ",\n".join(rows) + "\n]\n").encode()


def test_an_array_of_one_element_a_line_is_read_as_lines_up_to_its_last() -> None:
    """Every element line but the last is read as a line (the last has no ","), and they are
    matched by one layout; an element the layout does not fit is read in its place."""
    rows = [json.dumps(_row(i), separators=(",", ":")) for i in range(300)]
    rows[7] = rows[7].replace('"e7"', '"e\\u0037"')  # an escape: not a qualifying line
    rows[10] = rows[10].replace('"value":10', '"value":10,"value":9')  # a key twice
    rows[11] = rows[11].replace('"value":11', '"value": 11')  # the layout does not fit
    data = _array(rows)
    lines = Elements(io.BytesIO(data), DEPTH)
    assert sum(len(block.text) for block in lines) == 7
    assert lines.items == 7 and lines.left is not None and lines.left.startswith(b'{"identi')
    got, expected = read_both(data, 64, 1 << 18)
    assert got == expected
    assert "'e7'" in got[7] and "names key 'value' twice" in got[10] and ", 11)]" in got[11]

    rows[7] = rows[7].replace('"e\\u0037"', '"e7"')
    lines = Elements(io.BytesIO(_array(rows)), DEPTH)
    assert sum(len(block.text) for block in lines) == 299
    assert [r.identifier for r in lines.rest()] == ["e299"]  # the last, by the array reader
    got, expected = read_both(_array(rows), 64, 1 << 18)
    assert got == expected and len(got) == 300


def test_the_separator_found_first_splits_the_array_and_another_hands_it_over() -> None:
    data = b'[\r\n  {"a":1} ,\r\n\t{"a":2} ,\r\n\t{"a":"x"},\n{"a":3} ,\r\n\t{"a":4}\r\n]'
    elements = Elements(io.BytesIO(data), DEPTH)
    assert [text for block in elements for text in block.text.to_pylist()] == [
        '{"a":1}',
        '{"a":2}',
    ]
    assert elements.left == b'{"a":"x"},\n{"a":3} ,\r\n\t{"a":4}\r\n]'
    got, expected = read_both(data, 2, 1 << 18)
    assert got == expected and len(got) == 5


@pytest.mark.parametrize(
    ("indent", "separators"), [(None, None), (None, (",", ":")), (2, None), (1, (",", ":"))]
)
def test_arrays_as_json_dumps_writes_them_are_split_up_to_their_last_element(
    indent: int | None, separators: tuple[str, str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Minified, `json.dumps`'s default, pretty-printed: every element but the last is split
    out here and matched by a layout (pretty-printed ones without their line breaks and
    indents), none decoded one by one."""
    rows = [_row(i) for i in range(3000)]
    data = json.dumps(rows, indent=indent, separators=separators).encode()
    elements = Elements(io.BytesIO(data), DEPTH)
    assert sum(len(block.text) for block in elements) == 2999 == elements.items
    decoded: list[int] = []
    real = jsonarray.element_record

    def counted(number: int, text: str, depth: int) -> Any:
        decoded.append(number)
        return real(number, text, depth)

    monkeypatch.setattr(jsonarray, "element_record", counted)
    got, expected = read_both(data, 700, 1 << 14)
    assert got == expected and len(got) == 3000
    assert decoded == []


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b'[\n{"a":1},\n{"a":2}\n', "JSON array is not closed (file truncated?)"),
        (b'[\n{"a":1},\n{"a":2},\n]\n', "invalid JSON in item 3: Expecting value"),
        (b'[\n{"a":1},\n{"a":2}\n]\nx', "unexpected data after the JSON array"),
        (b'[\n{"a":1},\n{"a":2}\n{"a":3}\n]', "JSON array: expected ',' after item 2"),
        (b'[\n{"a":1},\n,\n]', "JSON array: missing item after item 1"),
        (b'[\n{"a":1},\n{"a":\xff},\n]', "not UTF-8 text: undecodable byte at offset 16"),
        (b'[\n{"a":1},\n{"a":"\xff"},\n{"a":2}\n]', "not UTF-8 text: undecodable byte at"),
        (b'{\n{"a":1},\n{"a":2}\n]', "JSON file is not an array (expected '[')"),
        (b'x[\n{"a":1},\n{"a":2}\n]', "JSON file is not an array (expected '[')"),
        # item 2 (a number too long to read) is a refused row: the comma before "]" fails it
        (b'[\n{"a":1},\n{"a":' + b"9" * 5000 + b"},\n]", "invalid JSON in item 3: Expecting"),
    ],
)
def test_a_broken_array_fails_as_the_array_reader_fails_it(data: bytes, error: str) -> None:
    got, expected = read_both(data, 10, 1 << 18)
    assert got == expected
    assert got[0] == "fails" and got[1].startswith(error)


def test_an_array_deeper_than_the_limit_allows_is_left_to_the_array_reader() -> None:
    data = _array([json.dumps(_row(i)) + "" for i in range(5)])
    lines = Elements(io.BytesIO(data), 1)
    assert list(lines) == [] and lines.items == 0
    got, expected = read_both(data, 10, 1 << 18, depth=1)
    assert got == expected and "nested deeper than 1 levels" in got[0]


def _remediate(data: bytes, fmt: FileFormat, out: Path, max_rows: int | None) -> Any:
    records: Any
    if fmt is FileFormat.JSON:
        records = JsonArrayRecords(io.BytesIO(data), DEPTH)
    else:
        from remediation.jsonrecords import JsonlRecords

        records = JsonlRecords(io.BytesIO(data), DEPTH)
    return remediate(
        records,
        source=f"usage.{fmt.value}",
        fmt=fmt,
        meters=[Meter(id="mtr_1", event_name="api_requests")],
        rules=Rules(),
        now=NOW,
        out_dir=out,
        max_rows=max_rows,
    )


@pytest.mark.parametrize("max_rows", [None, 4000])
def test_a_json_array_is_written_as_the_json_lines_rows_with_separators(
    tmp_path: Path, max_rows: int | None
) -> None:
    """Corrected and quarantined rows of a JSON array, built as JSON Lines lines, are written
    with "[", ",\\n" and "]" between them: each part is a JSON array of the very lines the
    same rows get as JSON Lines (batches of 8,192 rows; parts of `max_rows`)."""
    rows = [_row(i) for i in range(20_000)]
    for i in range(0, 20_000, 7):
        rows[i]["event_name"] = "zzz"  # no meter: quarantined
    texts_ = [json.dumps(r, separators=(",", ":")) for r in rows]
    as_array = _remediate(_array(texts_), FileFormat.JSON, tmp_path / "json", max_rows)
    as_lines = ("\n".join(texts_) + "\n").encode()
    as_jsonl = _remediate(as_lines, FileFormat.JSONL, tmp_path / "jsonl", max_rows)
    assert as_array.summary["corrected"] == as_jsonl.summary["corrected"] > 0
    assert as_array.summary["quarantined"] == as_jsonl.summary["quarantined"] > 0
    pairs = list(zip(as_array.outputs, as_jsonl.outputs, strict=True))
    assert len(pairs) == (2 if max_rows is None else 6)
    for array_output, lines_output in pairs:
        lines_ = lines_output.path.read_bytes().decode().splitlines()
        written = array_output.path.read_bytes().decode()
        assert written == "[\n" + ",\n".join(lines_) + "\n]\n"
        assert json.loads(written) == [json.loads(line) for line in lines_]
        assert array_output.rows == len(lines_) > 0


def test_a_refused_element_of_a_pretty_printed_array_keeps_its_text_as_it_came() -> None:
    """Layouts match pretty-printed elements without their line breaks; an element refused
    (a key named twice) is quarantined with its text as the file has it."""
    rows = [json.dumps(_row(i), indent=2) for i in range(50)]
    rows[20] = rows[20].replace('"value": 20', '"value": 20,\n    "value": 21')
    data = ("[\n" + ",\n".join(rows) + "\n]\n").encode()
    got, expected = read_both(data, 16, 1 << 18)
    assert got == expected
    assert "names key 'value' twice" in got[20] and '\\n    "value": 21' in got[20]
