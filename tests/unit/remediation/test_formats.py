"""Readers and writers: round trips for all three formats, broken inputs, error columns."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from typing import Any, BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remediation import batching, jsonarraystream
from remediation.core.csvread import CsvColumns
from remediation.core.jsonlread import jsonl_batches
from remediation.errors import UnreadableFile
from remediation.formats import FileFormat, RecordWriter, detect_format, read_records
from remediation.jsonrecords import JsonlRecords
from remediation.meters import Meter
from remediation.poller import import_chunks, index_chunks
from remediation.records import UsageRecord
from remediation.rowdigest import record_digests
from remediation.rownames import RowNames
from remediation.validation import MeterIndex
from tests.fuzz import fuzz_examples

HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value"


def read(data: bytes, fmt: FileFormat) -> list[UsageRecord]:
    return list(read_records(io.BytesIO(data), fmt))


def write(records: list[UsageRecord], fmt: FileFormat, **kwargs: object) -> bytes:
    out = io.BytesIO()
    with RecordWriter(out, fmt, **kwargs) as writer:  # type: ignore[arg-type]
        for record in records:
            writer.write(record)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.csv", "csv"),
        ("A.JSON", "json"),
        ("x.jsonl", "jsonl"),
        ("x.ndjson", "jsonl"),
        ("noext", "csv"),
    ],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt


def test_csv_reads_error_columns_extra_and_bom() -> None:
    data = (
        "\ufeff" + HEADER + ",error_code,error_message,region\r\n"
        "id1,1700000000,api,cus_1,5,timestamp_in_future,,eu\r\n"
        "\r\n"
        "id2,,api,,7,,Customer mapping key stripe_customer_id not found in payload.,us\r\n"
    ).encode()
    first, second = read(data, FileFormat.CSV)
    assert (first.row_number, first.identifier, first.timestamp) == (1, "id1", "1700000000")
    assert first.payload == {"stripe_customer_id": "cus_1", "value": "5"}
    assert first.extra == {"region": "eu"}
    assert first.error_code == "timestamp_in_future"
    assert second.row_number == 2 and second.timestamp is None
    assert second.payload == {"value": "7"}  # empty cell = absent key
    assert second.error_message and second.error_code is None


@pytest.mark.parametrize(
    ("cells", "code", "message"),
    [
        ({"error": "no_meter"}, "no_meter", None),
        ({"error": "Something broke."}, None, "Something broke."),
        ({"code": " ARCHIVED_METER "}, "archived_meter", None),
        ({"errors": "timestamp_in_future;no_meter"}, "timestamp_in_future", None),
        ({"errors": '[{"code": "no_meter"}]'}, "no_meter", None),
        ({"message": "m", "error_code": "x_new"}, "x_new", "m"),
    ],
)
def test_csv_error_column_variants(
    cells: dict[str, str], code: str | None, message: str | None
) -> None:
    out = io.StringIO()
    csv.writer(out).writerows([["event_name", *cells], ["api", *cells.values()]])
    (record,) = read(out.getvalue().encode(), FileFormat.CSV)
    assert (record.error_code, record.error_message) == (code, message)


def test_csv_ragged_row_is_marked_malformed_not_dropped() -> None:
    data = f"{HEADER}\na,1,api,cus_1,5,EXTRA\nb,1\n".encode()
    first, second = read(data, FileFormat.CSV)
    assert first.malformed == 'row has 6 fields, header has 5; fields past the header: ["EXTRA"]'
    assert second.malformed and second.payload == {}


def test_csv_broken_quoting_and_long_fields() -> None:
    long_value = "x" * 300_000
    data = f'{HEADER}\na,1,api,"{long_value}",5\nb,1,api,"cus_""q""",6\n'.encode()
    first, second = read(data, FileFormat.CSV)
    assert first.payload["stripe_customer_id"] == long_value
    assert second.payload["stripe_customer_id"] == 'cus_"q"'
    unterminated = f'{HEADER}\na,1,api,"cus_1,5\nb,1,api,cus_2,6\n'.encode()
    records = read(unterminated, FileFormat.CSV)
    assert len(records) == 1 and records[0].malformed  # the quote swallowed the rest


def test_non_utf8_is_unreadable() -> None:
    with pytest.raises(UnreadableFile, match="not UTF-8"):
        read(f"{HEADER}\na,1,api,caf\xe9,5\n".encode("latin-1"), FileFormat.CSV)


class _Unseekable(io.RawIOBase):
    """Bytes that can be read once, as from a socket."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._data.readinto(buffer)


def _csv_records(stream: BinaryIO) -> object:
    return list(read_records(stream, FileFormat.CSV))


def _csv_columns(stream: BinaryIO) -> object:
    return list(CsvColumns(stream, ",", None, 1 << 16).blocks())


def _jsonl_records(stream: BinaryIO) -> object:
    return list(read_records(stream, FileFormat.JSONL))


def _jsonl_batches(stream: BinaryIO) -> object:
    return list(jsonl_batches(JsonlRecords(stream, 32), batching.JSONL_BATCH_ROWS))


def _json_array(stream: BinaryIO) -> object:
    return list(read_records(stream, FileFormat.JSON))


def _poller_csv(stream: BinaryIO) -> object:
    index = MeterIndex([Meter(id="mtr_1", event_name="api")])
    return list(
        import_chunks(
            read_records(stream, FileFormat.CSV), index, now=1, names=RowNames("k.csv", "t")
        )
    )


@pytest.mark.parametrize(
    ("reader", "head", "row", "tail"),
    [
        (_csv_records, HEADER + "\n", "a,1,api,cus_1,5\n", ""),
        (_csv_columns, HEADER + "\n", "a,1,api,cus_1,5\n", ""),
        (_poller_csv, HEADER + "\n", "a,1,api,cus_1,5\n", ""),
        (_jsonl_records, "", '{"identifier":"a","timestamp":1}\n', ""),
        (_jsonl_batches, "", '{"identifier":"a","timestamp":1}\n', ""),
        (_json_array, "[", '{"identifier":"a","timestamp":1},', "{}]"),
    ],
)
def test_a_byte_that_is_not_utf8_is_named_by_its_offset_in_the_file(
    reader: Any, head: str, row: str, tail: str
) -> None:
    """Far past the first chunks any reader decodes: the offset is the file's, not the
    chunk's (a byte at 1,900,015 was reported at 65,007). A stream that cannot seek back
    gets the error without an offset."""
    before = (head + row * 20_000).encode()
    data = before + b"caf\xe9" + (row * 10 + tail).encode()
    where = len(before) + 3
    with pytest.raises(UnreadableFile) as failed:
        reader(io.BytesIO(data))
    assert failed.value.reason == f"not UTF-8 text: undecodable byte at offset {where}"
    with pytest.raises(UnreadableFile) as failed:
        reader(io.BufferedReader(_Unseekable(data)))
    assert failed.value.reason == "not UTF-8 text: a byte sequence is not UTF-8"


def test_a_character_cut_by_a_read_is_no_error_and_a_broken_one_is_found_past_it() -> None:
    """The search reads 1 MB at a time: a character split between two reads decodes, and
    the offset of a broken one in the second read counts the split character's bytes once."""
    body = b"x" * 12 + b"\n" + '{"identifier":"ü€"}\n'.encode() * 60_000  # 1.4 MB
    assert body[(1 << 20) - 1] >= 0x80 and body[1 << 20] >= 0x80  # "ü" cut by the first read
    data = body + b'{"identifier":"\xe2\x82"}\n'  # a character with its last byte missing
    with pytest.raises(UnreadableFile) as failed:
        _jsonl_records(io.BytesIO(data))
    assert failed.value.reason == f"not UTF-8 text: undecodable byte at offset {len(body) + 15}"


def test_header_only_and_empty_files_have_no_records() -> None:
    assert read(HEADER.encode(), FileFormat.CSV) == []
    assert read(b"", FileFormat.CSV) == []
    assert read(b"  []  ", FileFormat.JSON) == []
    assert read(b"\n\n", FileFormat.JSONL) == []


def test_json_array_streams_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonarraystream, "CHUNK_CHARS", 3)
    data = json.dumps(
        [
            {
                "identifier": "a",
                "timestamp": 12345678,
                "event_name": "api",
                "payload": {"value": 25, "stripe_customer_id": "cus_1"},
                "extra_key": "test",
                "error": {"code": "no_meter", "message": "No meter"},
            },
            {"event_name": "api", "payload": {"value": "1.5"}},
        ]
    ).encode()
    first, second = read(data, FileFormat.JSON)
    assert first.timestamp == 12345678 and first.payload["value"] == 25
    assert first.extra == {"extra_key": "test"}
    assert (first.error_code, first.error_message) == ("no_meter", "No meter")
    assert second.row_number == 2 and second.identifier is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"[1,2", "not closed"),
        (b"[1,,2]", "missing item"),
        (b'{"a":1}', "not an array"),
        (b"[1 2]", "expected ','"),
        (b"[1]x", "after the JSON array"),
        (b"[{]", "invalid JSON"),
    ],
)
def test_broken_json_arrays_are_unreadable(data: bytes, reason: str) -> None:
    with pytest.raises(UnreadableFile, match=reason):
        read(data, FileFormat.JSON)


def test_json_non_object_element_and_bad_jsonl_line_are_malformed_rows() -> None:
    (record,) = read(b"[5]", FileFormat.JSON)
    assert record.malformed and record.extra == {"element": 5}
    good = b'{"event_name":"api","payload":{"value":1}}'
    records = read(good + b"\n{oops\n" + good + b"\n", FileFormat.JSONL)
    assert [r.row_number for r in records] == [1, 2, 3]
    assert records[1].malformed and records[1].extra == {"raw": "{oops"}


def test_writer_drops_error_and_mfx_fields_unless_asked() -> None:
    record = UsageRecord(
        1, "a", "1", "api", {"value": "2"}, {"mfx_x": "1", "k": "v"}, "no_meter", "m"
    )
    assert write([record], FileFormat.CSV) == (
        b"identifier,timestamp,event_name,payload_value,k\r\na,1,api,2,v\r\n"
    )
    line = json.loads(write([record], FileFormat.JSONL))
    assert line == {
        "identifier": "a",
        "timestamp": 1,  # whole seconds, a row to Stripe: a JSON number (Stripe's S3 format)
        "event_name": "api",
        "payload": {"value": "2"},
        "k": "v",
    }
    with_errors = json.loads(write([record], FileFormat.JSON, with_errors=True))
    assert with_errors[0]["error"] == {"code": "no_meter", "message": "m"}


def test_writer_fits_reports_missing_csv_columns() -> None:
    out = io.BytesIO()
    writer = RecordWriter(out, FileFormat.CSV, columns=["event_name", "payload_value"])
    assert writer.fits(UsageRecord(1, None, None, "x", {"value": "1"}))
    assert not writer.fits(UsageRecord(1, None, None, "x", {"tokens": "1"}))
    writer.close()
    assert out.getvalue() == b""  # nothing written: no header-only file


# --- property tests: any record survives a write + read ----------------------------------

text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
nonempty = text.filter(lambda s: s != "")
keys = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    nonempty,
    st.floats(allow_nan=False, allow_infinity=False),
)


def csv_records() -> st.SearchStrategy[list[UsageRecord]]:
    payload_keys = st.lists(keys, min_size=0, max_size=3, unique=True)
    return payload_keys.flatmap(
        lambda pk: st.lists(
            st.builds(
                lambda i, ts, ev, vals, ex: UsageRecord(
                    0, i, ts, ev, dict(zip(pk, vals, strict=True)), {"note": ex}
                ),
                st.one_of(st.none(), nonempty),
                st.one_of(st.none(), nonempty),
                st.one_of(st.none(), nonempty),
                st.lists(nonempty, min_size=len(pk), max_size=len(pk)),
                text,
            ),
            max_size=5,
        )
    )


def json_records() -> st.SearchStrategy[list[UsageRecord]]:
    return st.lists(
        st.builds(
            lambda i, ts, ev, payload, ex: UsageRecord(0, i, ts, ev, payload, ex),
            st.one_of(st.none(), nonempty),
            json_scalar,
            st.one_of(st.none(), nonempty),
            st.dictionaries(keys, json_scalar, max_size=3),
            st.dictionaries(keys.map(lambda k: "x" + k), json_scalar, max_size=2),
        ),
        max_size=5,
    )


def _numbered(records: list[UsageRecord]) -> list[UsageRecord]:
    for number, record in enumerate(records, 1):
        record.row_number = number
    return records


@settings(max_examples=150, deadline=None)
@given(csv_records())
def test_csv_round_trip(records: list[UsageRecord]) -> None:
    records = _numbered(records)
    assert read(write(records, FileFormat.CSV), FileFormat.CSV) == records


@settings(max_examples=150, deadline=None)
@given(json_records(), st.sampled_from([FileFormat.JSON, FileFormat.JSONL]))
def test_json_round_trip(records: list[UsageRecord], fmt: FileFormat) -> None:
    records = _numbered(records)
    assert read(write(records, fmt), fmt) == records


def typed_records() -> st.SearchStrategy[list[UsageRecord]]:
    """JSON rows with any typed timestamp (64-bit and past it) and event name, and payloads
    of scalars and objects (some rows without a key others hold)."""
    value = st.one_of(json_scalar, st.dictionaries(keys, json_scalar, max_size=2))
    return st.lists(
        st.builds(
            lambda i, ts, ev, payload: UsageRecord(0, i, ts, ev, payload),
            nonempty,
            st.one_of(json_scalar, st.integers(-(10**20), 10**20), st.just("1700000000")),
            st.one_of(json_scalar, st.sampled_from(["api_requests", "API_Requests"])),
            st.dictionaries(st.sampled_from(["stripe_customer_id", "value", "a", "b"]), value),
        ),
        max_size=6,
    )


@settings(max_examples=fuzz_examples(150), deadline=None)
@given(
    st.one_of(
        st.tuples(csv_records(), st.just(FileFormat.CSV)),
        st.tuples(typed_records(), st.sampled_from([FileFormat.JSON, FileFormat.JSONL])),
    )
)
def test_fuzz_a_rows_digest_is_the_same_read_as_columns_or_as_a_record(
    written: tuple[list[UsageRecord], FileFormat],
) -> None:
    """The poller records each row's digest from columns (import and index mode); an error
    report compares it with the row read as a record: they must agree for any row."""
    records, fmt = written
    data = write(_numbered(records), fmt)
    again = read(data, fmt)
    by_record = dict(zip([r.row_number for r in again], record_digests(again), strict=True))
    index = MeterIndex([Meter(id="mtr_1", event_name="api_requests")])
    chunks = import_chunks(
        read_records(io.BytesIO(data), fmt), index, now=1, names=RowNames("k.csv", "t")
    )
    imported = {ref.row_number: ref.content for chunk in chunks for ref in chunk.rows}
    assert imported == by_record
    indexed = {
        ref.row_number: ref.content
        for group in index_chunks(read_records(io.BytesIO(data), fmt))
        for ref in group
    }
    assert indexed == {n: d for n, d in by_record.items() if again[n - 1].identifier}


@settings(max_examples=fuzz_examples(150), deadline=None)
@given(
    st.one_of(
        st.tuples(csv_records(), st.just(FileFormat.CSV)),
        st.tuples(typed_records(), st.sampled_from([FileFormat.JSON, FileFormat.JSONL])),
    ),
    st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_fuzz_rows_without_identifiers_are_named_alike_read_as_columns_or_as_records(
    written: tuple[list[UsageRecord], FileFormat], blank: list[bool]
) -> None:
    """The poller names a row without an identifier from columns; an error report names the
    rows of the object it reads as records, to find the row Stripe sampled: for any rows
    (some twice, alike), the names must agree."""
    records, fmt = written
    twice = records * 2
    rows = [
        replace(r, identifier="" if b else r.identifier) for r, b in zip(twice, blank, strict=False)
    ]
    data = write(_numbered(rows), fmt)
    index = MeterIndex([Meter(id="mtr_1", event_name="api_requests")])
    chunks = import_chunks(
        read_records(io.BytesIO(data), fmt), index, now=1, names=RowNames("k.csv", "t")
    )
    imported = {ref.row_number: ref.identifier for chunk in chunks for ref in chunk.rows}
    named = RowNames("k.csv", "t").records(read(data, fmt), size=3)
    assert imported == {record.row_number: record.identifier for record in named}
    unnamed = [imported[n] for n, row in enumerate(rows, 1) if not row.identifier]
    assert len(set(unnamed)) == len(unnamed)  # rows alike get the next number
