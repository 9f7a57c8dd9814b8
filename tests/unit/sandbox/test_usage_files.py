"""The connector's file parser: formats and whole-file failures."""

from __future__ import annotations

import json

import pytest

from sandbox.bucket import is_usage_key
from sandbox.usage_files import FailedReason, WholeFileFailure, parse_usage_file

CSV = (
    "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
    "a,1700000000,api,cus_1,5\n"
    ",,api,,7\n"
)


def test_csv_rows_become_events_with_flat_columns() -> None:
    parsed = parse_usage_file("u/x.csv", CSV.encode())
    assert parsed.columns[:3] == ["identifier", "timestamp", "event_name"]
    first, second = parsed.rows
    assert first.event.payload == {"stripe_customer_id": "cus_1", "value": "5"}
    assert (first.event.identifier, first.event.timestamp) == ("a", 1700000000)
    assert second.event.payload == {"value": "7"}
    assert second.event.identifier  # generated when absent
    assert second.columns["identifier"] == ""


def test_json_and_jsonl_nested_payload() -> None:
    records = [
        {
            "identifier": "j1",
            "timestamp": 1,
            "event_name": "api",
            "payload": {"value": 200, "stripe_customer_id": "cus_1"},
        }
    ]
    for key, text in (("a.json", json.dumps(records)), ("a.jsonl", json.dumps(records[0]) + "\n")):
        (row,) = parse_usage_file(key, text.encode()).rows
        assert row.event.payload == {"value": "200", "stripe_customer_id": "cus_1"}
        assert row.columns["payload_value"] == "200"


@pytest.mark.parametrize(
    ("key", "content", "reason"),
    [
        ("e.csv", b"", FailedReason.EMPTY_FILE),
        ("h.csv", b"identifier,event_name\n", FailedReason.EMPTY_FILE),
        ("e.json", b"[]", FailedReason.EMPTY_FILE),
        ("m.csv", b"identifier,payload_value\nx,1\n", FailedReason.MISSING_REQUIRED_COLUMN),
        ("s.csv", b"identifier;event_name\nx;api\n", FailedReason.MISSING_REQUIRED_COLUMN),
        ("b.json", b"{not json", FailedReason.UNPARSEABLE_FILE),
        ("l.json", b'{"event_name": "a"}\n{"event_name": "b"}\n', FailedReason.UNPARSEABLE_FILE),
        ("o.json", b'{"event_name": "a"}', FailedReason.UNPARSEABLE_FILE),
        ("bin.csv", b"\xff\xfe\x00", FailedReason.UNPARSEABLE_FILE),
    ],
)
def test_whole_file_failures(key: str, content: bytes, reason: FailedReason) -> None:
    with pytest.raises(WholeFileFailure) as failure:
        parse_usage_file(key, content)
    assert failure.value.reason == reason


def test_bom_is_tolerated() -> None:
    (row,) = parse_usage_file("b.csv", b"\xef\xbb\xbfidentifier,event_name\nx,api\n").rows
    assert row.event.identifier == "x"


@pytest.mark.parametrize(
    ("key", "usage"),
    [
        ("a.csv", True),
        ("dir/a.JSONL", True),
        ("corrected/a.json", True),
        ("quarantine/a.csv", False),
        ("a.csv.meta.json", False),
        ("notes.txt", False),
    ],
)
def test_usage_keys(key: str, usage: bool) -> None:
    assert is_usage_key(key) is usage
