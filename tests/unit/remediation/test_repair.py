"""Whole-file repairs: delimiters, header aliases, format mismatch, default event_name, empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from remediation.errors import UnreadableFile
from remediation.formats import FileFormat
from remediation.repair import plan_input, read_repaired, whole_file_failure
from remediation.rules import load_rules


def records(path: Path, rules_text: str = "") -> list[tuple[object, ...]]:
    rules = load_rules(rules_text)
    plan = plan_input(path, rules)
    with open(path, "rb") as stream:
        return [
            (r.identifier, r.timestamp, r.event_name, r.payload)
            for r in read_repaired(stream, plan, rules)
        ]


def test_semicolon_delimiter_bom_and_header_aliases(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_bytes("\ufeffid;ts;event;customer_id;quantity\na;1;api;cus_1;5\n".encode())
    plan = plan_input(path, load_rules(""))
    assert plan.delimiter == ";"
    assert plan.columns == (
        "identifier",
        "timestamp",
        "event_name",
        "payload_stripe_customer_id",
        "payload_value",
    )
    assert records(path) == [("a", "1", "api", {"stripe_customer_id": "cus_1", "value": "5"})]


def test_alias_not_applied_when_canonical_present(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text("event_name,payload_value,value\napi,1,2\n")
    assert records(path) == [(None, None, "api", {"value": "1"})]


def test_tab_delimiter_and_default_event_name(tmp_path: Path) -> None:
    path = tmp_path / "u.tsv"
    path.write_text("identifier\ttimestamp\tpayload_value\na\t1\t5\n")
    rows = records(path, '[policy]\ndefault_event_name = "api_requests"')
    assert rows == [("a", "1", "api_requests", {"value": "5"})]
    assert records(path)[0][2] is None  # not configured: left for no_meter


@pytest.mark.parametrize(
    ("header", "columns"),
    [
        ("identifier,timestamp,payload_value", "identifier,timestamp,event_name,payload_value"),
        ("payload_value,identifier", "payload_value,identifier,event_name"),
        ("payload_value", "identifier,event_name,payload_value"),  # identifier: see below
    ],
)
def test_a_filled_event_name_is_an_output_column(tmp_path: Path, header: str, columns: str) -> None:
    """The corrected file of a file without an event_name column, filled from the policy's
    default, held no event_name column: Stripe failed it again for the same reason."""
    path = tmp_path / "u.csv"
    path.write_text(header + "\n")
    plan = plan_input(path, load_rules('[policy]\ndefault_event_name = "api_requests"'))
    assert ",".join(plan.columns) == columns
    unfilled = header if "identifier" in header else f"identifier,{header}"
    assert ",".join(plan_input(path, load_rules("")).columns) == unfilled


def test_a_csv_without_identifiers_is_corrected_with_derived_ones(tmp_path: Path) -> None:
    """A failed-records CSV without an identifier column: its corrected file had none either
    (the audit naming `row-…-mfx1` identifiers the file never held), so Stripe gave each row
    a new identifier at each import, and a second upload billed it twice."""
    path = tmp_path / "noid.csv"
    path.write_text(
        "timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
        '1764000000,api_requests,cus_a,"1,234",meter_event_invalid_value\n'
    )
    plan = plan_input(path, load_rules(""))
    assert plan.columns[0] == "identifier"


@pytest.mark.parametrize(
    ("name", "content", "fmt"),
    [
        ("u.jsonl", '[{"event_name": "api", "payload": {}}]', FileFormat.JSON),
        ("u.json", '{"event_name": "api", "payload": {}}\n', FileFormat.JSONL),
    ],
)
def test_json_array_vs_json_lines_mismatch(
    tmp_path: Path, name: str, content: str, fmt: FileFormat
) -> None:
    path = tmp_path / name
    path.write_text(content)
    plan = plan_input(path, load_rules(""))
    assert plan.fmt is fmt and plan.repairs
    assert records(path) == [(None, None, "api", {})]


def test_empty_file_is_dropped_with_reason(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text("  \n")
    with pytest.raises(UnreadableFile, match="empty file"):
        plan_input(path, load_rules(""))


@pytest.mark.parametrize(
    ("name", "head", "reason"),
    [
        ("u.csv", "identifier,timestamp,event_name,payload_value\na,1,api,5\n", None),
        ("u.csv", "\ufeffidentifier, event_name ,payload_value\n", None),
        ("u.csv", "identifier;timestamp;event_name;payload_value\n", "delimiter ';'"),
        ("u.csv", "identifier\ttimestamp\tevent_name\n", "delimiter '\\t'"),
        ("u.csv", "identifier,timestamp,payload_value\n", "Missing required column: event_name."),
        ("u.jsonl", '[{"event_name": "api"}]', "jsonl file holds a JSON array"),
        ("u.json", '{"event_name": "api"}\n', "json file holds JSON Lines"),
        ("u.jsonl", '{"event_name": "api"}\n', None),
        ("u.json", '[{"event_name": "api"}]', None),
        ("u.csv", "", None),
        ("notes.toml", "[customers]\n", None),
    ],
)
def test_whole_file_failures_are_told_from_the_first_bytes(
    name: str, head: str, reason: str | None
) -> None:
    found = whole_file_failure(head.encode(), name)
    assert found == reason if reason is None else (found or "").startswith(reason)
