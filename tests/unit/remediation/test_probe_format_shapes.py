"""Shapes of a file that were read otherwise than their rows say: a header name holding a
line break, error keys in another case, a JSON object wrapping the rows, rows without a
payload (`meterfix remediate`, with the examples' meters and rules)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

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
