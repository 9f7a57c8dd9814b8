"""`meterfix remediate` refuses what it cannot read one way only, and reads a value alike
whatever the file's format (README "Remediation rules")."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from tests.integration.test_cli_remediate import common, meterfix

HEADER = "identifier;timestamp;event_name;payload_stripe_customer_id;payload_value;error_code"


def _remediate(tmp_path: Path, name: str, text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The summary and the audit lines (the summary line left out) of one remediation."""
    source = tmp_path / name
    source.write_text(text, encoding="utf-8")
    out = tmp_path / f"out-{name}"
    proc = meterfix("remediate", str(source), "--out", str(out), *common("--json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    lines = Path(summary["outputs"]["audit"]).read_text(encoding="utf-8").splitlines()
    audit = [line for line in map(json.loads, lines) if line.get("kind") != "summary"]
    return summary, audit


def _by_identifier(audit: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["identifier"]: line for line in audit}


def _quarantined(summary: dict[str, Any]) -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    for path in summary["outputs"]["quarantine"]:
        with open(path, newline="", encoding="utf-8") as file:
            rows.update({row["identifier"]: row for row in csv.DictReader(file)})
    return rows


def test_a_comma_in_a_semicolon_file_may_be_its_decimal_mark_and_is_refused(
    tmp_path: Path,
) -> None:
    rows = ["eu1;1764000000;api_requests;cus_Q1a2B3c4;2,5;meter_event_invalid_value"]
    rows += ["eu2;1764000000;api_requests;cus_Q1a2B3c4;1,500;meter_event_invalid_value"]
    rows += ["eu3;1764000000;api_requests;cus_Q1a2B3c4;1.234,5;meter_event_invalid_value"]
    rows += ["eu4;1764000000;api_requests;cus_Q1a2B3c4;1 500;meter_event_invalid_value"]
    summary, _ = _remediate(tmp_path, "eu.csv", "\n".join([HEADER, *rows]) + "\n")
    assert (summary["corrected"], summary["quarantined"]) == (1, 3)
    quarantined = _quarantined(summary)
    assert sorted(quarantined) == ["eu1", "eu2", "eu3"]
    reason = quarantined["eu2"]["mfx_reason"]
    assert "'1,500'" in reason and "decimal mark" in reason and "';'-delimited" in reason


def test_a_thousands_comma_in_a_comma_file_is_still_corrected(tmp_path: Path) -> None:
    text = HEADER.replace(";", ",") + "\n"
    text += 'us1,1764000000,api_requests,cus_Q1a2B3c4,"1,500",meter_event_invalid_value\n'
    summary, audit = _remediate(tmp_path, "us.csv", text)
    assert (summary["corrected"], summary["quarantined"]) == (1, 0)
    assert _by_identifier(audit)["us1"]["after"] == "1500"


def test_a_lone_zero_before_a_comma_group_is_no_thousands_in_any_file(tmp_path: Path) -> None:
    """`0,500` was corrected to 500 in a comma CSV and in JSON (a 1000x charge where it meant
    0.5): no thousands group follows a lone 0. `12,345.50` and `1,500` are still thousands."""
    values = {"z1": "0,500", "z2": "-0,250.5", "z3": "0,001,000", "t1": "12,345.50", "t2": "1,500"}
    text = HEADER.replace(";", ",") + "\n"
    lines = []
    for identifier, value in values.items():
        text += f'{identifier},1764000000,api_requests,cus_Q1a2B3c4,"{value}",'
        text += "meter_event_invalid_value\n"
        row = f'"identifier": "{identifier}", "timestamp": 1764000000, "event_name": "api_requests"'
        row += f', "payload": {{"stripe_customer_id": "cus_Q1a2B3c4", "value": "{value}"}}'
        lines.append("{" + row + ', "error": {"code": "meter_event_invalid_value"}}')
    for name, body in (("z.csv", text), ("z.jsonl", "\n".join(lines) + "\n")):
        summary, audit = _remediate(tmp_path, name, body)
        assert (summary["corrected"], summary["quarantined"]) == (2, 3), name
        corrected = _by_identifier(audit)
        assert (corrected["t1"]["after"], corrected["t2"]["after"]) == ("12345.5", "1500"), name
        held = {line["identifier"]: line for line in audit if line.get("kind") == "quarantine"}
        assert sorted(held) == ["z1", "z2", "z3"], name
        assert all("lone 0" in line["reason"] for line in held.values()), held


def test_a_whole_number_in_a_json_number_spelling_is_read_alike_in_csv_and_json(
    tmp_path: Path,
) -> None:
    spellings = {"s1": "1.764e12", "s2": "1764000000000.000", "s3": "1764000000.0"}
    header = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code"
    text = header + "\n"
    lines = []
    for identifier, stamp in spellings.items():
        text += f"{identifier},{stamp},api_requests,cus_Q1a2B3c4,5,timestamp_in_future\n"
        row = f'"identifier": "{identifier}", "timestamp": {stamp}, "event_name": "api_requests"'
        row += ', "payload": {"stripe_customer_id": "cus_Q1a2B3c4", "value": "5"}'
        lines.append("{" + row + ', "error": {"code": "timestamp_in_future"}}')
    from_csv, csv_audit = _remediate(tmp_path, "stamps.csv", text)
    from_json, json_audit = _remediate(tmp_path, "stamps.jsonl", "\n".join(lines) + "\n")
    assert (from_csv["quarantined"], from_json["quarantined"]) == (0, 0)
    csv_lines, json_lines = _by_identifier(csv_audit), _by_identifier(json_audit)
    for identifier in ("s1", "s2"):
        assert (
            csv_lines[identifier]["rule"] == json_lines[identifier]["rule"] == "timestamp_ms_to_s"
        )
        assert csv_lines[identifier]["before"] == spellings[identifier]
        assert csv_lines[identifier]["after"] == json_lines[identifier]["after"] == 1764000000
    # within the window: JSON sends its number again as it was; a CSV cell gets the seconds
    # Stripe reads from a cell
    assert json_lines["s3"]["kind"] == "resend"
    assert (csv_lines["s3"]["rule"], csv_lines["s3"]["after"]) == ("timestamp_seconds", 1764000000)
    with open(from_csv["outputs"]["corrected"][0], newline="", encoding="utf-8") as file:
        assert [row["timestamp"] for row in csv.DictReader(file)] == ["1764000000"] * 3
