"""Shapes of a file that were read otherwise than their rows say: a header name holding a
line break, error and `mfx_` keys in another case, a JSON object wrapping the rows
(`meterfix remediate`, with the examples' meters and rules)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from remediation.errors import UnreadableFile
from remediation.formats import FileFormat
from remediation.repair import plan_input
from remediation.rules import load_rules
from service.commands.remediate import remediate_command

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
NOW = "2025-11-24T16:00:00Z"


def remediated(path: Path) -> dict[str, Any]:
    """`meterfix remediate` of `path`: its summary, with the rows of each output read."""
    out = path.parent / "out"
    args = [str(path), "--out", str(out), "--json", "--now", NOW]
    args += ["--meters", str(EXAMPLES / "meters.json"), "--rules", str(EXAMPLES / "rules.toml")]
    result = CliRunner().invoke(remediate_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.output)
    for kind in ("corrected", "quarantine"):
        summary[kind] = [row for name in summary["outputs"][kind] for row in _rows(Path(name))]
    return summary


def _rows(path: Path) -> list[Any]:
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            return list(csv.reader(handle))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    loaded: list[Any] = json.loads(path.read_text())
    return loaded


def test_a_line_break_in_a_quoted_header_name_keeps_the_quarantined_row_whole(
    tmp_path: Path,
) -> None:
    """The header was read from the file's first line: the quarantine file had the columns
    up to the line break only, and the row lost its customer, its value and the cell X."""
    path = tmp_path / "k.csv"
    path.write_text(
        'identifier,timestamp,event_name,"payload_x\ny",payload_stripe_customer_id,'
        "payload_value,error_code\n"
        "k1,1764000000000,api_requests,X,cus_demo_alice,5,timestamp_in_future\n"
    )
    summary = remediated(path)
    assert (summary["input_rows"], summary["quarantined"]) == (1, 1)
    header, row = summary["quarantine"]
    assert header[:-2] == [
        "identifier",
        "timestamp",
        "event_name",
        "payload_x\ny",
        "payload_stripe_customer_id",
        "payload_value",
    ]
    assert row[:-1] == [
        "k1",
        "1764000000000",
        "api_requests",
        "X",
        "cus_demo_alice",
        "5",
        "timestamp_in_future",
    ]
    assert "control character" in row[-1]


def test_header_names_differing_by_a_line_break_stay_two_columns(tmp_path: Path) -> None:
    path = tmp_path / "k.csv"
    path.write_bytes(
        b'identifier,timestamp,event_name,"payload_a\nb","payload_a\rb",'
        b"payload_stripe_customer_id,payload_value,error_code\n"
        b"k1,1764000000000,api_requests,A,B,cus_demo_alice,5,timestamp_in_future\n"
    )
    header, row = remediated(path)["quarantine"]
    assert header[3:5] == ["payload_a\nb", "payload_a\rb"]
    assert row[3:7] == ["A", "B", "cus_demo_alice", "5"]


def _row(identifier: str, **keys: object) -> dict[str, object]:
    payload = {"stripe_customer_id": "cus_demo_alice", "value": "5"}
    core = {"identifier": identifier, "timestamp": 1764000000, "event_name": "api_requests"}
    return {**core, "payload": payload, **keys}


def _written(tmp_path: Path, name: str, rows: list[dict[str, object]]) -> Path:
    """`rows` as JSON Lines, a JSON array or a CSV (payload keys as `payload_` columns)."""
    (tmp_path / name).mkdir()
    path = tmp_path / name / f"e.{name}"
    if name == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif name == "json":
        path.write_text(json.dumps(rows))
    else:
        flat = [_flat(row) for row in rows]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, list(flat[0]))
            writer.writeheader()
            writer.writerows(flat)
    return path


def _flat(row: dict[str, object]) -> dict[str, object]:
    """A row's CSV cells: its payload keys as `payload_` columns after the others."""
    payload = row["payload"]
    assert isinstance(payload, dict)
    flat = {k: v for k, v in row.items() if k != "payload"}
    return {**flat, **{f"payload_{k}": v for k, v in payload.items()}}


def test_error_keys_in_another_case_make_a_json_file_a_failed_records_file(
    tmp_path: Path,
) -> None:
    """`Error_Code`/`Error_Message` were no error keys in JSON (the rows counted valid, no
    output) while the same CSV columns were: the rows are quarantined alike."""
    rows = [_row(f"a{i}", Error_Code="weird_code", Error_Message="m") for i in (1, 2)]
    for name in ("csv", "jsonl", "json"):
        summary = remediated(_written(tmp_path, name, rows))
        assert (summary["valid"], summary["quarantined"]) == (0, 2), name
        assert summary["by_code"] == {"weird_code": {"corrected": 0, "quarantined": 2}}, name
        notes = [
            row[-2:] if name == "csv" else [row["mfx_code"], row["mfx_reason"]]
            for row in summary["quarantine"][-2:]
        ]
        assert [code for code, _ in notes] == ["unclassified", "unclassified"], name
        assert all("'weird_code'" in reason for _, reason in notes), name


def test_error_and_mfx_keys_in_another_case_are_not_in_a_corrected_row(tmp_path: Path) -> None:
    rows = [
        _row(
            "c1",
            timestamp=1764000000000,
            error_code="timestamp_in_future",
            Error_Message="too far ahead",
            MFX_Code="x",
            mfx_note="n",
        )
    ]
    rows[0]["timestamp"] = 1764000000000
    for name in ("csv", "jsonl", "json"):
        summary = remediated(_written(tmp_path, name, rows))
        assert summary["corrected"] and summary["corrected"][-1], name
        if name == "csv":
            header, row = summary["corrected"]
            assert header == [
                "identifier",
                "timestamp",
                "event_name",
                "payload_stripe_customer_id",
                "payload_value",
            ]
            assert row[:2] == ["c1-mfx1", "1764000000"]
        else:
            (row,) = summary["corrected"]
            assert list(row) == ["identifier", "timestamp", "event_name", "payload"], name
            assert (row["identifier"], row["timestamp"]) == ("c1-mfx1", 1764000000)


@pytest.mark.parametrize("name", ["u.json", "u.jsonl"])
@pytest.mark.parametrize("indent", [None, 2])
def test_a_json_object_wrapping_the_rows_is_refused_whole(
    tmp_path: Path, name: str, indent: int | None
) -> None:
    """`{"data": [rows]}` was read as one JSON Lines row (its rows one `data` key, quarantined
    `no_meter`): it is no row, and which of its keys holds the usage is not guessed."""
    rows = [_row(f"w{i}", error_code="timestamp_in_future") for i in (1, 2, 3)]
    path = tmp_path / name
    path.write_text(json.dumps({"data": rows, "has_more": False}, indent=indent))
    with pytest.raises(UnreadableFile, match="a JSON object wrapping an array under 'data'"):
        plan_input(path, load_rules(""))
    args = [str(path), "--out", str(tmp_path / "o"), "--meters", str(EXAMPLES / "meters.json")]
    result = CliRunner().invoke(remediate_command, args)
    assert result.exit_code != 0
    assert "wrapping an array under 'data'" in result.output
    assert not list((tmp_path / "o").glob("*.json*"))


def test_a_wrapper_longer_than_the_head_is_refused_by_its_first_key(tmp_path: Path) -> None:
    rows = [_row(f"w{i}", error_code="timestamp_in_future") for i in range(2000)]
    path = tmp_path / "u.json"
    path.write_text(json.dumps({"data": rows}))
    with pytest.raises(UnreadableFile, match="wrapping an array under 'data'"):
        plan_input(path, load_rules(""))


@pytest.mark.parametrize(
    "first",
    [
        {"tags": ["a"], "identifier": "r1", "event_name": "api_requests"},
        {"notes": [{"n": 1}], "Event_Name": "api_requests"},  # a usage key in any case
        {"tags": [{"n": 1}], "payload": {"value": "1"}},
    ],
)
def test_a_row_holding_a_list_is_still_a_row(tmp_path: Path, first: dict[str, Any]) -> None:
    path = tmp_path / "u.jsonl"
    path.write_text(json.dumps(first) + "\n")
    assert plan_input(path, load_rules("")).fmt is FileFormat.JSONL
