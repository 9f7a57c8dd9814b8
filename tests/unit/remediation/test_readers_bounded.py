"""Readers stay bounded and never guess: caps on lines, fields and
elements, keys named twice, abandoned readers; meters and rules documents of the wrong shape."""

from __future__ import annotations

import gc
import gzip
import io
import json
from pathlib import Path

import pytest

from remediation import jsonarraystream, jsondocuments, jsonreaders
from remediation.errors import BadMeters, BadRules, UnreadableFile
from remediation.formats import FileFormat, read_records
from remediation.limits import MAX_LINE_CHARS
from remediation.meters import parse_meters
from remediation.records import UsageRecord
from remediation.rules import load_rules

GOOD = b'{"identifier": "g", "payload": {"value": 1}}'


def read(data: bytes, fmt: FileFormat) -> list[UsageRecord]:
    return list(read_records(io.BytesIO(data), fmt))


def test_keys_named_twice_are_malformed_rows_not_a_guess() -> None:
    lines = [
        b'{"identifier": "a", "payload": {"value": 1, "value": 1000}}',
        b'{"identifier": "a", "identifier" : "b"}',
        b'{"timestamp": "2025-11-24T16:00:00Z", "t": "10:00"}',  # colons in values: fine
        GOOD,
    ]
    records = read(b"\n".join(lines), FileFormat.JSONL)
    assert [r.malformed for r in records] == [
        "line names key 'value' twice in one object; nothing guessed",
        "line names key 'identifier' twice in one object; nothing guessed",
        None,
        None,
    ]
    assert records[0].extra == {"raw": lines[0].decode()}  # kept whole for the quarantine file
    array = b"[" + lines[0] + b"," + GOOD + b"]"
    first, second = read(array, FileFormat.JSON)
    assert first.malformed == "element names key 'value' twice in one object; nothing guessed"
    assert second.malformed is None and second.identifier == "g"


@pytest.mark.parametrize(
    "header",
    [
        "identifier,timestamp,event_name,payload_value,payload_value",
        "identifier,timestamp,IDENTIFIER,payload_value",
        "identifier,error_code,timestamp,Error_Code",
        # the prefix is read in any case: both are the payload key `value` (the last billed,
        # the corrected file written with `payload_value` twice)
        "identifier,timestamp,event_name,payload_value,PAYLOAD_value",
        "identifier,timestamp,Payload_value,event_name,payload_value",
    ],
)
def test_a_column_named_twice_fails_the_file(header: str) -> None:
    with pytest.raises(UnreadableFile, match=r"ambiguous header: column .* appears twice"):
        read(f"{header}\n1,2,3,4,5\n".encode(), FileFormat.CSV)


@pytest.mark.parametrize(
    ("name", "code"),
    [("timestamp\u200b", "U+200B"), ("timestamp\x00", "U+0000"), ("time\u2028stamp", "U+2028")],
)
def test_a_column_name_holding_an_invisible_character_fails_the_file(name: str, code: str) -> None:
    """`timestamp` + a zero-width space (or a NUL) was no timestamp column: every row read
    without one, counted valid and re-sent so (Stripe stamps it with its arrival)."""
    header = f"identifier,{name},event_name,payload_stripe_customer_id,payload_value"
    with pytest.raises(UnreadableFile) as refused:
        read(f"{header}\nz1,1700000000,api_requests,cus_1,5\n".encode(), FileFormat.CSV)
    assert str(refused.value) == (
        f"ambiguous header: column 2 {name!r} is 'timestamp' but for the invisible "
        f"character {code}; nothing guessed"
    )
    (record,) = read(b"event_name,payload_my\xc2\xa0key,no\x01te\napi,1,2\n", FileFormat.CSV)
    assert record.payload == {"my\u00a0key": "1"}  # a no-break space is a name's own
    assert record.extra == {"no\x01te": "2"}  # no column of ours: the row's own


def test_payload_keys_differing_in_case_are_two_keys() -> None:
    (record,) = read(b"event_name,payload_Value,payload_value\napi,1,2\n", FileFormat.CSV)
    assert record.payload == {"Value": "1", "value": "2"}
    (record,) = read(b"event_name,value,payload_value\napi,1,2\n", FileFormat.CSV)
    assert (record.payload, record.extra) == ({"value": "2"}, {"value": "1"})


def test_a_json_line_past_the_cap_is_skipped_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonreaders, "MAX_LINE_CHARS", 5000)
    monkeypatch.setattr(jsondocuments, "CHUNK_CHARS", 64)
    huge = b'{"identifier": "' + b"x" * 20_000 + b'"}'
    records = read(GOOD + b"\n" + huge + b"\n" + GOOD + b"\n", FileFormat.JSONL)
    assert [r.row_number for r in records] == [1, 2, 3]
    assert records[1].malformed == "line is 20019 characters long; at most 5000 are read"
    assert len(str(records[1].extra["raw"])) == jsonreaders.RAW_KEPT
    assert records[2].identifier == "g"


def test_a_json_element_past_the_cap_fails_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonarraystream, "MAX_JSON_ELEMENT_CHARS", 1000)
    monkeypatch.setattr(jsonarraystream, "CHUNK_CHARS", 100)
    data = b'[{"identifier": "' + b"x" * 5000 + b'"}]'
    with pytest.raises(UnreadableFile, match="item 1 is longer than 1000 characters"):
        read(data, FileFormat.JSON)


def test_a_broken_json_element_fails_the_file_saying_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A NUL inside a string of item 2, with more than an element's bound of text after it.

    Before: the array was read on to the element bound and refused as "item 2 is longer
    than 1000 characters"; in a smaller file the reason ended "Invalid control character at"."""
    monkeypatch.setattr(jsonarraystream, "MAX_JSON_ELEMENT_CHARS", 1000)
    monkeypatch.setattr(jsonarraystream, "CHUNK_CHARS", 100)
    rows = [b'{"identifier": "r%d", "note": "n"}' % at for at in range(200)]
    rows[1] = b'{"identifier": "r1", "note": "a\x00b"}'
    data = b"[" + b",\n".join(rows) + b"]"
    assert data.count(b"\x00") == 1
    with pytest.raises(UnreadableFile) as caught:
        read(data, FileFormat.JSON)
    assert caught.value.reason == (
        "invalid JSON in item 2: Invalid control character "
        "(a NUL, a tab, a line break or another such character in a string)"
    )
    rows[1] = b'{"identifier": "r1", "note": "n",}'
    with pytest.raises(UnreadableFile) as caught:
        read(b"[" + b",\n".join(rows) + b"]", FileFormat.JSON)
    assert caught.value.reason == (
        "invalid JSON in item 2: Expecting property name enclosed in double quotes"
    )


def test_a_json_line_holding_a_raw_control_character_says_so_in_words() -> None:
    """A JSON Lines line with a raw tab in a string: its reason ended in a dangling "at"
    ("line is not JSON: Invalid control character at"), as a JSON array's did."""
    line = b'{"identifier": "t1", "note": "a\tb"}'
    (record,) = read(line + b"\n", FileFormat.JSONL)
    assert record.malformed == (
        "line is not JSON: Invalid control character "
        "(a NUL, a tab, a line break or another such character in a string)"
    )


def test_a_csv_field_past_the_cap_fails_the_file_with_a_reason() -> None:
    data = b'identifier,payload_value\na,"' + b"x" * (MAX_LINE_CHARS + 10) + b"\n"
    with pytest.raises(UnreadableFile) as caught:
        read(data, FileFormat.CSV)
    assert caught.value.reason == (
        f"broken CSV: a field is longer than {MAX_LINE_CHARS} characters (a quote left open?)"
    )


@pytest.mark.parametrize("fmt", list(FileFormat))
def test_a_reader_abandoned_after_its_file_closed_raises_nothing(
    tmp_path: Path, fmt: FileFormat
) -> None:
    path = tmp_path / f"in.{fmt.value}"
    row = {"identifier": "a", "payload": {"value": 1}}
    if fmt is FileFormat.CSV:
        path.write_text("identifier,payload_value\n" + "a,1\n" * 10_000)
    elif fmt is FileFormat.JSON:
        path.write_text(json.dumps([row] * 10_000))
    else:
        path.write_text((json.dumps(row) + "\n") * 10_000)
    with open(path, "rb") as stream:
        records = read_records(stream, fmt)
        next(records)  # reading started, then an error elsewhere abandons the reader
    del records  # finalized after its file was closed: no "I/O operation on closed file"
    gc.collect()


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"data": 5}, "meters document: 'data' is int, not a list of meters"),
        ({"data": None}, "meters document: 'data' is null, not a list of meters"),
        ({"object": "list"}, "meters document must be a list or an object with 'data'"),
        ("meters", "meters document must be a list or an object with 'data'"),
        ([None], "meter #0 is a NoneType, not an object"),
        ([{"id": "m"}], "meter #0 has no event_name"),
        ([{"id": "m", "event_name": 5}], "meter 'm' has no event_name string (it holds 5)"),
        (
            [{"id": "m", "event_name": "e" * 101}],
            f"meter 'm': event_name {'e' * 40!r}… (101 characters) is longer than 100 characters",
        ),
        (
            [{"id": "m", "event_name": "a\tb"}],
            "meter 'm': event_name 'a\\tb' holds a control character (U+0009 at position 2)",
        ),
        (
            [{"id": "m", "event_name": "e", "status": None}],
            "meter 'm' has no status string (it holds (empty))",
        ),
        (
            [{"id": "m", "event_name": "e", "customer_mapping": {"event_payload_key": 5}}],
            "meter 'm' has no customer_mapping.event_payload_key string (it holds 5)",
        ),
        (
            [
                {
                    "id": "m",
                    "event_name": "e",
                    "value_settings": {"event_payload_key": "stripe_customer_id"},
                }
            ],
            "meter 'm': payload key 'stripe_customer_id' is both its customer key and its "
            "value key",
        ),
        (
            [{"id": "m1", "event_name": "e"}, {"id": "m2", "event_name": "e", "status": "active"}],
            "meters 'm1' and 'm2' are both active with event_name 'e' (Stripe allows one active "
            "meter an event name)",
        ),
        (
            [{"id": "m", "event_name": "e", "customer_mapping": "cus_1"}],
            "meter 'm': customer_mapping is a str, not an object",
        ),
        (
            [{"id": "m", "event_name": "e", "value_settings": [1]}],
            "meter 'm': value_settings is a list, not an object",
        ),
        (
            [{"id": "m", "event_name": "e", "dimension_payload_keys": "region"}],
            "meter 'm': dimension_payload_keys is not a list",
        ),
    ],
)
def test_meters_documents_of_the_wrong_shape_say_why(document: object, reason: str) -> None:
    with pytest.raises(BadMeters) as caught:
        parse_meters(document)
    assert caught.value.reason == reason


def test_limits_are_policy_keys() -> None:
    rules = load_rules("[policy]\nmax_json_depth = 8\nmax_value_decimal_places = 0\n")
    assert (rules.policy.limits.max_json_depth, rules.policy.limits.max_value_decimal_places) == (
        8,
        0,
    )
    for bad in ("max_json_depth = 0", "max_identifier_chars = true", "max_event_name_chars = 'x'"):
        with pytest.raises(BadRules, match="must be an integer of at least"):
            load_rules(f"[policy]\n{bad}\n")
    deep = b"[" * 9 + b"]" * 9
    (record,) = list(
        read_records(io.BytesIO(deep + b"\n"), FileFormat.JSONL, limits=rules.policy.limits)
    )
    assert record.malformed == "line is nested deeper than 8 levels"


LONE = "holds a lone UTF-16 surrogate escape (\\ud800-\\udfff): not Unicode text"


def test_a_lone_surrogate_escape_is_a_malformed_row_and_a_pair_is_text() -> None:
    r"""`\ud800` alone decodes to a string no UTF-8 file, database or request can hold: the
    line (or array element) is refused with its text kept as written; a surrogate pair is
    one character, and an escaped backslash before "ud800" is no escape."""
    lines = [
        rb'{"identifier": "a\ud800b", "payload": {"value": 1}}',  # a lone high surrogate
        rb'{"identifier": "g2", "payload": {"note": "\uDC00", "value": 1}}',  # a lone low one
        rb'{"identifier": "\ud83d\ude00", "payload": {"value": 1}}',  # a pair: one character
        rb'{"identifier": "x\\ud800", "payload": {"value": 1}}',  # a backslash, then text
        rb'{"identifier": "h", "payload": {"\udbff": 1}}',  # in a key
        GOOD,
    ]
    records = read(b"\n".join(lines), FileFormat.JSONL)
    assert [r.malformed for r in records] == [
        f"line {LONE}",
        f"line {LONE}",
        None,
        None,
        f"line {LONE}",
        None,
    ]
    assert records[0].extra == {"raw": lines[0].decode()}  # the escape, as written
    assert records[2].identifier == "\U0001f600" and records[3].identifier == "x\\ud800"
    array = b"[" + b",".join(lines) + b"]"
    elements = read(array, FileFormat.JSON)
    assert [r.malformed for r in elements] == [
        f"element {LONE}",
        f"element {LONE}",
        None,
        None,
        f"element {LONE}",
        None,
    ]
    assert elements[1].extra == {"raw": lines[1].decode()}


ODD_NUMBERS = [
    (b"NaN", "holds NaN, which is not a JSON number"),
    (b"Infinity", "holds Infinity, which is not a JSON number"),
    (b"-Infinity", "holds -Infinity, which is not a JSON number"),
    (b"1e999", "holds the number 1e999, past the range of a float"),
    (b"-2.5E+400", "holds the number -2.5E+400, past the range of a float"),
    (b"1" * 400 + b".5", "holds the number " + "1" * 40 + "…, past the range of a float"),
]


@pytest.mark.parametrize(("number", "reason"), ODD_NUMBERS)
def test_numbers_json_does_not_have_are_malformed_rows(number: bytes, reason: str) -> None:
    """`NaN`, `Infinity` and numbers past a float's range: json.loads reads them as floats and
    json.dumps writes them back as no JSON reader takes (Stripe's, PostgreSQL's). The line or
    element is refused whole, its text kept as written; the rows around it read as before
    (tiny and large finite numbers among them)."""
    odd = b'{"identifier": "o", "payload": {"value": 1, "note": ' + number + b"}}"
    fine = b'{"identifier": "f", "payload": {"value": 1e-999, "big": 1e300, "n": %d}}' % 10**22
    records = read(b"\n".join([GOOD, odd, fine]), FileFormat.JSONL)
    assert [r.malformed for r in records] == [None, f"line {reason}", None]
    assert records[1].extra == {"raw": odd.decode()} and records[1].payload == {}
    assert records[2].payload == {"value": 0.0, "big": 1e300, "n": 10**22}
    elements = read(b"[" + b",\n".join([GOOD, odd, fine, GOOD]) + b"]", FileFormat.JSON)
    assert [r.malformed for r in elements] == [None, f"element {reason}", None, None]
    assert elements[1].extra == {"raw": odd.decode()}
    assert elements[2].payload == records[2].payload


@pytest.mark.parametrize("fmt", [FileFormat.CSV, FileFormat.JSONL, FileFormat.JSON])
@pytest.mark.parametrize(
    ("packed", "kind"),
    [
        (
            gzip.compress(b'{"identifier": "a"}\n', mtime=0),
            "a gzip-compressed file (it starts with 1f 8b)",
        ),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00", "a zip archive file (it starts with 50 4b 03 04)"),
    ],
)
def test_a_compressed_file_is_named_so(fmt: FileFormat, packed: bytes, kind: str) -> None:
    """A `usage.csv.gz` renamed `usage.csv` in the bucket: the poller said "undecodable byte
    at offset 1", the CLI quoted a first line of binary: neither said it was compressed."""
    with pytest.raises(UnreadableFile) as refused:
        read(packed + b"\xff" * 64, fmt)
    assert refused.value.reason == f"not UTF-8 text: {kind}: decompress it first"
