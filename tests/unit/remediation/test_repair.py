"""Whole-file repairs: delimiters, header aliases, format mismatch, default event_name, empty."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from remediation.errors import UnreadableFile
from remediation.formats import FileFormat
from remediation.repair import plan_input, read_repaired, whole_file_failure
from remediation.rules import load_rules
from service.commands.remediate import remediate_command


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


@pytest.mark.parametrize(
    ("header", "said"),
    [
        ("identifier,event_name,payload_stripe_customer_id,value,value", "'value' appears twice"),
        ("identifier,event_name,customer,Customer,payload_value", "'Customer' appears twice"),
        (
            "identifier,event_name,payload_stripe_customer_id,payload_value,qty,qty",
            "columns 5 and 6",
        ),
    ],
)
def test_an_alias_named_twice_is_refused(tmp_path: Path, header: str, said: str) -> None:
    """The first was renamed and the second kept as a column of its own: `value,value` went out
    billing the first beside the second's other amount, with no reason given. (An alias
    beside its canonical column, the third case's `qty` once, is read as before.)"""
    path = tmp_path / "u.csv"
    path.write_text(header + "\n" + ",".join(["x"] * header.count(",")) + ",x\n")
    with pytest.raises(UnreadableFile, match="ambiguous header") as refused:
        plan_input(path, load_rules(""))
    assert said in str(refused.value)


def test_tab_delimiter_and_default_event_name(tmp_path: Path) -> None:
    path = tmp_path / "u.tsv"
    path.write_text("identifier\ttimestamp\tpayload_value\na\t1\t5\n")
    rows = records(path, '[policy]\ndefault_event_name = "api_requests"')
    assert rows == [("a", "1", "api_requests", {"value": "5"})]
    assert records(path)[0][2] is None  # not configured: left for no_meter


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        ("identifier;timestamp;event_name;payload_value;note,x", ";"),
        ("identifier\ttimestamp\tevent_name\tpayload_value\tnote a, b", "\t"),
        ("identifier,timestamp,event_name,payload_value,a;b;c;d;e", ","),
    ],
)
def test_the_delimiter_is_the_one_naming_the_usage_columns(
    tmp_path: Path, header: str, delimiter: str
) -> None:
    """A `;` (or tab) header with a column name holding a comma was read as comma-delimited
    and the file refused as "naming none of identifier, timestamp, event_name"."""
    path = tmp_path / "u.csv"
    cells = delimiter.join(["a", "1", "api", "5", "n"])
    path.write_text(f"{header}\n{cells}\n")
    plan = plan_input(path, load_rules(""))
    assert plan.delimiter == delimiter
    assert records(path) == [("a", "1", "api", {"value": "5"})]


def test_only_a_missing_event_name_column_is_filled(tmp_path: Path) -> None:
    """`default_event_name` filled every row of no event name: an empty cell under the
    column, a JSON row without the key. A failed row of no event name was billed to the
    default meter, audited as `api_requests` -> `api_requests`."""
    rules = '[policy]\ndefault_event_name = "api_requests"'
    path = tmp_path / "u.csv"
    path.write_text("identifier,timestamp,event_name,payload_value\na,1,,5\nb,1,tokens,5\n")
    assert [row[2] for row in records(path, rules)] == [None, "tokens"]
    path = tmp_path / "u.jsonl"
    path.write_text('{"identifier": "a", "timestamp": 1, "payload": {"value": 5}}\n')
    assert [row[2] for row in records(path, rules)] == [None]


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


def _remediated(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """`meterfix remediate` of `path` (its summary, corrected rows and audit lines)."""
    (path.parent / "meters.json").write_text(
        '[{"id": "mtr_1", "event_name": "api_requests", "status": "active"}]'
    )
    args = [str(path), "--meters", str(path.parent / "meters.json"), "--now", "1764000000"]
    out = path.parent / "out"
    result = CliRunner().invoke(
        remediate_command, [*args, "--out", str(out), "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    corrected: list[dict[str, Any]] = []
    for written in sorted(out.glob("*.corrected.*")):
        if written.suffix == ".csv":
            with written.open(newline="") as handle:
                corrected += [
                    {k: v for k, v in row.items() if k.startswith("payload_") or k == "identifier"}
                    for row in csv.DictReader(handle)
                ]
        else:
            for line in written.read_text().splitlines():
                row = json.loads(line)
                payload = {f"payload_{k}": v for k, v in row["payload"].items()}
                corrected.append({"identifier": row["identifier"], **payload})
    audit = next(out.glob("*.audit.jsonl")).read_text().splitlines()
    keys = ("row", "rule", "field", "before", "after")
    lines = [{key: line.get(key) for key in keys} for line in map(json.loads, audit)]
    return json.loads(result.output), corrected, [line for line in lines if line["rule"]]


def test_a_customer_under_a_header_alias_fills_a_failed_rows_customer(tmp_path: Path) -> None:
    """Stripe refused rows whose customer sat in a `customer_id` column (not
    `payload_stripe_customer_id`) as `meter_event_no_customer_defined`. The repaired header
    renamed the column, and the CSV's rows were then quarantined as having "no single aliased
    column" (the row holding the customer), where the same rows as JSON Lines, the customer a
    top-level `customer_id`, were corrected: both fill the customer from the alias."""
    (tmp_path / "csv").mkdir()
    (tmp_path / "jsonl").mkdir()
    (tmp_path / "csv" / "f.csv").write_text(
        "identifier,timestamp,event_name,payload_value,customer_id,error_code,error_message\n"
        "a,1763996400,api_requests,5,cus_1,meter_event_no_customer_defined,no customer\n"
        "b,1763996400,api_requests,6,,meter_event_no_customer_defined,no customer\n"
    )
    (tmp_path / "jsonl" / "f.jsonl").write_text(
        '{"identifier": "a", "timestamp": 1763996400, "event_name": "api_requests", '
        '"payload": {"value": "5"}, "customer_id": "cus_1", '
        '"error": {"code": "meter_event_no_customer_defined", "message": "no customer"}}\n'
        '{"identifier": "b", "timestamp": 1763996400, "event_name": "api_requests", '
        '"payload": {"value": "6"}, '
        '"error": {"code": "meter_event_no_customer_defined", "message": "no customer"}}\n'
    )
    summary, corrected, audit = _remediated(tmp_path / "csv" / "f.csv")
    assert corrected == [
        {"identifier": "a-mfx1", "payload_value": "5", "payload_stripe_customer_id": "cus_1"}
    ]
    assert audit == [
        {
            "row": 1,
            "rule": "fill_customer_key",
            "field": "payload.stripe_customer_id",
            "before": None,
            "after": "cus_1",
        }
    ]
    assert (summary["corrected"], summary["quarantined"]) == (1, 1)  # b: no customer anywhere
    assert _remediated(tmp_path / "jsonl" / "f.jsonl")[1:] == (corrected, audit)


def test_a_blank_alias_is_no_second_candidate_for_a_missing_key(tmp_path: Path) -> None:
    """A JSON row whose payload held the customer under one alias (`customer`) and a blank
    string under another (`customer_id`) was quarantined as having "no single aliased column"
    (the blank counted as a second candidate), where the same row as CSV, the blank an empty
    cell (absent), was corrected. A blank (empty, spaces, null) holds no customer or amount:
    it is not a candidate, in either format, for the customer key or the value key."""
    (tmp_path / "csv").mkdir()
    (tmp_path / "jsonl").mkdir()
    (tmp_path / "csv" / "f.csv").write_text(
        "identifier,timestamp,event_name,payload_value,payload_customer,payload_customer_id,"
        "error_code,error_message\n"
        "a,1763996400,api_requests,5,cus_1,,meter_event_no_customer_defined,no customer\n"
        "s,1763996400,api_requests,6,cus_2,  ,meter_event_no_customer_defined,no customer\n"
    )
    rows = [
        ("a", {"value": "5", "customer": "cus_1", "customer_id": ""}, "no_customer_defined"),
        ("s", {"value": "6", "customer": "cus_2", "customer_id": "  "}, "no_customer_defined"),
        ("v", {"stripe_customer_id": "cus_1", "qty": "7", "count": ""}, "value_not_found"),
        ("w", {"stripe_customer_id": "cus_1", "qty": "8", "count": None}, "value_not_found"),
    ]
    (tmp_path / "jsonl" / "f.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "identifier": identifier,
                    "timestamp": 1763996400,
                    "event_name": "api_requests",
                    "payload": payload,
                    "error": {"code": f"meter_event_{code}", "message": "refused"},
                }
            )
            + "\n"
            for identifier, payload, code in rows
        )
    )
    summary, corrected, audit = _remediated(tmp_path / "csv" / "f.csv")
    assert (summary["corrected"], summary["quarantined"]) == (2, 0)
    assert corrected == [  # a blank of spaces kept (another key layout: another file)
        {"identifier": "a-mfx1", "payload_value": "5", "payload_stripe_customer_id": "cus_1"},
        {
            "identifier": "s-mfx1",
            "payload_value": "6",
            "payload_customer_id": "  ",
            "payload_stripe_customer_id": "cus_2",
        },
    ]
    renamed = {"rule": "rename_key", "field": "payload.customer"}
    assert audit == [
        {"row": 1, **renamed, "before": "customer", "after": "stripe_customer_id"},
        {"row": 2, **renamed, "before": "customer", "after": "stripe_customer_id"},
    ]
    summary, corrected, audit = _remediated(tmp_path / "jsonl" / "f.jsonl")
    assert (summary["corrected"], summary["quarantined"]) == (4, 0)
    assert corrected == [  # the blank kept as it came (the meter does not read it)
        {
            "identifier": "a-mfx1",
            "payload_value": "5",
            "payload_customer_id": "",
            "payload_stripe_customer_id": "cus_1",
        },
        {
            "identifier": "s-mfx1",
            "payload_value": "6",
            "payload_customer_id": "  ",
            "payload_stripe_customer_id": "cus_2",
        },
        {
            "identifier": "v-mfx1",
            "payload_stripe_customer_id": "cus_1",
            "payload_count": "",
            "payload_value": "7",
        },
        {
            "identifier": "w-mfx1",
            "payload_stripe_customer_id": "cus_1",
            "payload_count": None,
            "payload_value": "8",
        },
    ]
    assert audit == [
        {"row": 1, **renamed, "before": "customer", "after": "stripe_customer_id"},
        {"row": 2, **renamed, "before": "customer", "after": "stripe_customer_id"},
        {"row": 3, "rule": "rename_key", "field": "payload.qty", "before": "qty", "after": "value"},
        {"row": 4, "rule": "rename_key", "field": "payload.qty", "before": "qty", "after": "value"},
    ]
