"""JSON documents that are not one value a line: a pretty-printed object (or a few) in a `.json`
or `.jsonl` file is read one object a row, on the row path and on columns alike; a broken one
still gives a malformed row a line, with its reason; UTF-16 text is refused as not UTF-8; and
U+2028/U+2029 go out escaped in the JSON Lines we write (a line reader breaks a line there)."""

from __future__ import annotations

import codecs
import io
import json
import time
from pathlib import Path

import pytest

from remediation.engine import batches, remediate
from remediation.errors import UnreadableFile
from remediation.formats import FileFormat, read_records
from remediation.jsonreaders import MAX_LINE_CHARS
from remediation.meters import Meter
from remediation.poller import import_chunks
from remediation.records import UsageRecord
from remediation.repair import plan_input, read_repaired
from remediation.rownames import RowNames
from remediation.rules import load_rules
from remediation.validation import MeterIndex

NOW = 1764000100
PRETTY = (
    "{\n"
    '  "event_name": "api_requests",\n'
    '  "timestamp": 1764000000,\n'
    '  "payload": {"stripe_customer_id": "cus_1", "value": "3"}\n'
    "}\n"
)
SECOND = '{\n\t"event_name": "api_requests",\r\n\t"identifier": "b2",\n\t"payload": {}\n}'


def rows(data: bytes, fmt: FileFormat) -> list[UsageRecord]:
    return list(read_records(io.BytesIO(data), fmt))


def column_rows(data: bytes, fmt: FileFormat) -> list[UsageRecord]:
    out: list[UsageRecord] = []
    for batch in batches(read_records(io.BytesIO(data), fmt), 1000):
        out += batch.records()
    return out


def shown(records: list[UsageRecord]) -> list[tuple[object, ...]]:
    return [
        (r.row_number, r.identifier, r.timestamp, r.event_name, r.payload, r.extra, r.malformed)
        for r in records
    ]


@pytest.mark.parametrize("fmt", [FileFormat.JSONL, FileFormat.JSON])
def test_one_pretty_printed_object_is_one_row(fmt: FileFormat) -> None:
    data = PRETTY.encode()
    expected = [
        (
            1,
            None,
            1764000000,
            "api_requests",
            {"stripe_customer_id": "cus_1", "value": "3"},
            {},
            None,
        )
    ]
    assert shown(rows(data, fmt)) == expected
    assert shown(column_rows(data, fmt)) == expected
    bom = codecs.BOM_UTF8 + b"\n  " + data  # a BOM and blanks before it change nothing
    assert shown(rows(bom, fmt)) == expected
    assert shown(column_rows(bom, fmt)) == expected


def test_pretty_printed_objects_one_after_another_are_a_row_each() -> None:
    data = (PRETTY + "\n" + SECOND + "\n").encode()
    for read in (rows, column_rows):
        got = shown(read(data, FileFormat.JSONL))
        assert [g[0] for g in got] == [1, 2]
        assert got[1] == (2, "b2", None, "api_requests", {}, {}, None)


def test_refused_object_keeps_its_reason_and_its_text() -> None:
    """A pretty-printed object naming a key twice is one malformed row, its text kept (its line
    breaks read as the whitespace they are)."""
    data = b'{\n  "event_name": "a",\n  "event_name": "b"\n}\n'
    for read in (rows, column_rows):
        (record,) = read(data, FileFormat.JSONL)
        assert (
            record.malformed == "line names key 'event_name' twice in one object; nothing guessed"
        )
        assert json.loads(str(record.extra["raw"])) == {"event_name": "b"}
        assert "\n" not in str(record.extra["raw"])


@pytest.mark.parametrize(
    "text",
    [
        # truncated: never one made-up row, each line its own malformed row, as before
        '{\n  "event_name": "api_requests",\n  "timestamp": 17640',
        # two values on one line are no document of objects a line
        '{\n "a": 1\n} {"b": 2}',
        # a line that is a row, after a pretty-printed one: read line by line
        '{"event_name": "x"}\n{\n "a": 1\n}',
    ],
)
def test_broken_documents_stay_a_malformed_row_a_line(text: str) -> None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for read in (rows, column_rows):
        got = read(text.encode(), FileFormat.JSONL)
        assert [r.row_number for r in got] == list(range(1, len(lines) + 1))
        assert [r.extra.get("raw") for r in got if r.malformed] == [
            line for line in lines if not _is_json(line)
        ]
        assert all(r.malformed.startswith("line is not JSON") for r in got if r.malformed)


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def test_a_document_past_the_line_bound_is_read_line_by_line() -> None:
    big = '{\n "event_name": "' + "x" * MAX_LINE_CHARS + '"\n}\n'
    got = rows(big.encode(), FileFormat.JSONL)
    assert [r.malformed is not None for r in got] == [True, True, True]


@pytest.mark.parametrize("fmt", [FileFormat.JSON, FileFormat.JSONL])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_is_not_utf8(fmt: FileFormat, encoding: str) -> None:
    row = json.dumps({"event_name": "api_requests", "payload": {"value": "1"}})
    text = f"[{row}]" if fmt is FileFormat.JSON else f"{row}\n{row}\n"
    with pytest.raises(UnreadableFile) as err:
        rows(text.encode(encoding), fmt)
    assert err.value.reason.startswith("not UTF-8 text: ")
    assert (
        # a BOM: it said "undecodable byte at offset 0", as CSV and JSON Lines did
        err.value.reason == "not UTF-8 text: UTF-16 text (it starts with ff fe): save it as UTF-8"
        if encoding == "utf-16"
        else "UTF-16" in err.value.reason
    )
    with pytest.raises(UnreadableFile) as again:
        column_rows(text.encode(encoding), fmt)
    assert again.value.reason == err.value.reason


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le"])
def test_utf16_json_array_file_is_not_utf8_in_remediate(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "usage.json"
    path.write_bytes('[{"event_name": "api_requests"}]'.encode(encoding))
    with pytest.raises(UnreadableFile) as err:
        plan_input(path, load_rules(""))
    assert err.value.reason.startswith("not UTF-8 text")


def test_poller_validates_one_pretty_printed_object() -> None:
    meters = MeterIndex([Meter(id="mtr_1", event_name="api_requests")])
    records = read_records(io.BytesIO(PRETTY.encode()), FileFormat.JSONL)
    chunks = list(import_chunks(records, meters, now=NOW, names=RowNames("k.jsonl", "t")))
    assert [len(c.rows) for c in chunks] == [1]
    (event,) = chunks[0].events
    assert event["payload"] == {"stripe_customer_id": "cus_1", "value": "3"}


@pytest.mark.parametrize("name", ["one.json", "one.jsonl"])
def test_remediation_reads_a_pretty_printed_file_as_one_row(tmp_path: Path, name: str) -> None:
    """The path `meterfix remediate` and the worker take: the file's plan, then its rows."""
    path = tmp_path / name
    path.write_text(PRETTY)
    plan = plan_input(path, load_rules(""))
    with path.open("rb") as stream:
        got = shown(list(read_repaired(stream, plan, load_rules(""))))
    assert got == [
        (
            1,
            None,
            1764000000,
            "api_requests",
            {"stripe_customer_id": "cus_1", "value": "3"},
            {},
            None,
        )
    ]


def test_csv_in_utf16_is_not_utf8_in_remediate(tmp_path: Path) -> None:
    path = tmp_path / "usage.csv"
    path.write_bytes("event_name,timestamp\napi_requests,1\n".encode("utf-16"))
    with pytest.raises(UnreadableFile) as err:
        plan_input(path, load_rules(""))
    assert err.value.reason == (
        "not UTF-8 text: UTF-16 text (it starts with ff fe): save it as UTF-8"
    )  # it said "undecodable byte at offset 0"


SEPARATED = [
    # corrected (milliseconds), its extra key holding U+2029: written on columns
    {"event_name": "api_requests", "timestamp": 1764000000000, "identifier": "c1",
     "note": "n\u2029o", "payload": {"stripe_customer_id": "cus_1", "value": "3"}},
    # corrected, nothing odd: its bytes are what they always were
    {"event_name": "api_requests", "timestamp": 1764000000000, "identifier": "c2",
     "payload": {"stripe_customer_id": "cus_1", "value": "3"}},
    # quarantined (a control character), written on columns
    {"event_name": "api_requests", "timestamp": 1764000000, "identifier": "q1",
     "payload": {"stripe_customer_id": "cus\u2028", "value": "3"}},
    # quarantined, an object among its keys: written record by record
    {"event_name": "api_requests", "timestamp": 1764000000, "identifier": "q2",
     "note": {"x": "a\u2029"}, "payload": {"stripe_customer_id": "cus\u2028", "value": "3"}},
]  # fmt: skip


@pytest.mark.parametrize("fmt", [FileFormat.JSONL, FileFormat.JSON])
def test_line_separators_are_escaped_in_what_is_written(tmp_path: Path, fmt: FileFormat) -> None:
    lines = [json.dumps(row, ensure_ascii=False) for row in SEPARATED]
    lines.append('{"event_name": "x\u2028", "broken')  # malformed: its raw text kept
    data = "\n".join(lines).encode() if fmt is FileFormat.JSONL else None
    if fmt is FileFormat.JSON:
        data = json.dumps(SEPARATED, ensure_ascii=False).encode()
    assert data is not None and "\u2028".encode() in data
    meters = [Meter(id="mtr_1", event_name="api_requests")]
    out = tmp_path / "out"
    remediate(
        read_records(io.BytesIO(data), fmt),
        source=f"usage.{fmt.value}",
        fmt=fmt,
        meters=meters,
        rules=load_rules(""),
        now=NOW,
        out_dir=out,
    )
    written = {p.name.split(".")[1]: p.read_bytes() for p in out.iterdir()}
    for kind in ("corrected", "quarantine"):
        assert "\u2028".encode() not in written[kind]
        assert "\u2029".encode() not in written[kind]
    corrected = written["corrected"].decode()
    quarantine = written["quarantine"].decode()
    if fmt is FileFormat.JSONL:
        assert corrected.splitlines() == corrected.split("\n")[:-1]  # no line cut in two
        assert quarantine.splitlines() == quarantine.split("\n")[:-1]
        got = [json.loads(line) for line in corrected.splitlines()]
        quarantined = [json.loads(line) for line in quarantine.splitlines()]
    else:
        got, quarantined = json.loads(corrected), json.loads(quarantine)
    assert [row["note"] for row in got if "note" in row] == ["n\u2029o"]
    assert r'"note":"n\u2029o"' in corrected
    assert (
        '{"identifier":"c2-mfx1","timestamp":1764000000,"event_name":"api_requests",'
        '"payload":{"stripe_customer_id":"cus_1","value":"3"}}'
    ) in corrected.splitlines()
    kept = {row.get("identifier"): row for row in quarantined}
    assert kept["q1"]["payload"]["stripe_customer_id"] == "cus\u2028"
    assert kept["q2"]["note"] == {"x": "a\u2029"}
    assert r'"stripe_customer_id":"cus\u2028"' in quarantine
    if fmt is FileFormat.JSONL:
        assert kept[None]["raw"] == '{"event_name": "x\u2028", "broken'
        assert r'"raw":"{\"event_name\": \"x\u2028\", \"broken"' in quarantine


@pytest.mark.parametrize("fmt", [FileFormat.JSONL, FileFormat.JSON])
@pytest.mark.parametrize("data", [b"\x00", b"\x00\n", b"{\x00}\n", b'\x00{"a":1}\n'])
def test_a_nul_byte_alone_is_no_utf16_file(fmt: FileFormat, data: bytes) -> None:
    """A NUL byte among the first two is not UTF-16 by itself: a JSON Lines line holding one
    is a malformed row, as any line that is no JSON (`test_fuzz_readers`: the file `\\x00`
    was refused whole as UTF-16, not read one record a line)."""
    if fmt is FileFormat.JSON:  # an array's broken item fails the file, as it always did
        with pytest.raises(UnreadableFile) as refused:
            list(read_records(io.BytesIO(b"[" + data.rstrip(b"\n") + b"]\n"), fmt))
        assert refused.value.reason.startswith("invalid JSON in item 1"), refused.value.reason
        return
    records = list(read_records(io.BytesIO(data), fmt))
    assert records and all(record.malformed for record in records), records


@pytest.mark.timeout(120)
def test_many_objects_after_a_pretty_printed_one_are_read_in_linear_time() -> None:
    """A pretty-printed object, then 200,000 small ones (4 MB), is read in about the time the
    same objects take without it: at most 3x and a second more (a time of its own, 10 s,
    failed under a loaded CI). Each read takes 1.2-1.9 s, the lead's ~0.2 s more, unchanged
    since the linear reading below; the test, with both reads, 3-4.3 s. The quadratic
    reading took 24 s.

    Before (`jsondocuments._objects`): the blanks before each object were found by
    stripping a copy of the rest of the text, so the time grew with the square of the
    objects: 60,000 pretty-printed rows (16 MB) took past 5 minutes, and 5,000,000 `{}`
    lines after one never finished."""
    plain = ('{"identifier": "x"}\n' * 200_000).encode()
    started = time.perf_counter()
    assert len(rows(plain, FileFormat.JSONL)) == 200_000
    baseline = time.perf_counter() - started
    data = (PRETTY + '{"identifier": "x"}\n' * 200_000).encode()
    started = time.perf_counter()
    records = rows(data, FileFormat.JSONL)
    took = time.perf_counter() - started
    assert took <= 3 * baseline + 1, f"{took:.1f} s against {baseline:.1f} s without the lead"
    assert len(records) == 200_001
    assert records[0].payload == {"stripe_customer_id": "cus_1", "value": "3"}
    assert {(r.identifier, r.malformed) for r in records[1:]} == {("x", None)}
    assert records[-1].row_number == 200_001
