"""`meterfix remediate` on JSON / JSON Lines inputs whose rows do not all carry error fields.

Whether such an input is a failed-records file (every row was rejected: all go to an output)
or a plain usage file (rows may have been billed: valid rows go to none) is decided from ALL
of its rows, as a CSV file's header decides it for all of its rows: one row anywhere carrying
an error code or message makes it a failed-records file.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent.parent / "data" / "usage"
METERFIX = str(Path(sys.executable).with_name("meterfix"))
ROOT = Path(__file__).parents[2]
NOW = 1764000000


def remediate(file: Path, out: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [
            METERFIX,
            "remediate",
            str(file),
            "--out",
            str(out),
            "--meters",
            str(DATA / "meters.json"),
            "--rules",
            str(DATA / "rules.toml"),
            "--now",
            str(NOW),
            "--json",
        ],
        cwd=file.parent,
        capture_output=True,
        text=True,
        timeout=60,
        # this checkout's code, not the one the console script was installed from
        env={"PATH": "/usr/bin:/bin", "HOME": str(file.parent), "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    summary: dict[str, Any] = json.loads(proc.stdout)
    return summary


def usage(identifier: str, timestamp: int = NOW, value: object = 5) -> dict[str, Any]:
    return {
        "identifier": identifier,
        "timestamp": timestamp,
        "event_name": "api_requests",
        "payload": {"stripe_customer_id": "cus_1", "value": value},
    }


def failed(row: dict[str, Any], code: str) -> dict[str, Any]:
    return {**row, "error": {"code": code, "message": f"rejected: {code}"}}


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    if path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def written(paths: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in paths:
        text = Path(path).read_text()
        if path.endswith(".json"):
            rows += json.loads(text)
        else:
            rows += [json.loads(line) for line in text.splitlines()]
    return rows


# the first row carries no error field; the later ones are Stripe's rejected rows
MIXED = [
    usage("j0"),
    failed(usage("j1", timestamp=NOW * 1000), "timestamp_in_future"),
    failed(usage("j2", value="NaN"), "meter_event_invalid_value"),
]


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_first_row_without_error_fields_does_not_decide_the_file(
    tmp_path: Path, suffix: str
) -> None:
    summary = remediate(write(tmp_path / f"failed{suffix}", MIXED), tmp_path / "out")
    # a failed-records file: every row was rejected, so every row goes to an output
    assert (summary["valid"], summary["corrected"], summary["quarantined"]) == (1, 1, 1)
    rows = written(summary["outputs"]["corrected"])
    assert [row["identifier"] for row in rows] == ["j0-mfx1", "j1-mfx1"]
    assert rows[1]["timestamp"] == NOW and "error" not in rows[1]
    (quarantined,) = written(summary["outputs"]["quarantine"])
    assert quarantined["identifier"] == "j2"
    assert quarantined["mfx_code"] == "meter_event_invalid_value"


def test_the_json_lines_file_is_decided_as_the_csv_of_the_same_rows(tmp_path: Path) -> None:
    """The CSV path decides by its header's error columns (a row's empty cell included)."""
    table = tmp_path / "failed.csv"
    with open(table, "w", newline="") as handle:
        out = csv.writer(handle)
        columns = ("identifier", "timestamp", "event_name", "payload_stripe_customer_id")
        out.writerow([*columns, "payload_value", "error_code"])
        for row in MIXED:
            code = row.get("error", {}).get("code", "")
            payload = row["payload"]
            core = [row["identifier"], row["timestamp"], row["event_name"]]
            out.writerow([*core, payload["stripe_customer_id"], payload["value"], code])
    from_csv = remediate(table, tmp_path / "csv")
    from_jsonl = remediate(write(tmp_path / "failed.jsonl", MIXED), tmp_path / "jsonl")
    for key in ("valid", "corrected", "quarantined", "by_code"):
        assert from_jsonl[key] == from_csv[key]
    with open(from_csv["outputs"]["corrected"][0], newline="") as handle:
        csv_ids = [row["identifier"] for row in csv.DictReader(handle)]
    jsonl_ids = [row["identifier"] for row in written(from_jsonl["outputs"]["corrected"])]
    assert jsonl_ids == csv_ids == ["j0-mfx1", "j1-mfx1"]


def test_an_error_field_far_past_the_head_still_makes_a_failed_records_file(
    tmp_path: Path,
) -> None:
    rows = [usage(f"u{n}") for n in range(2000)]
    rows.append(failed(usage("late", timestamp=NOW * 1000), "timestamp_in_future"))
    summary = remediate(write(tmp_path / "late.jsonl", rows), tmp_path / "out")
    out = written(summary["outputs"]["corrected"])
    assert len(out) == 2001 and out[-1]["identifier"] == "late-mfx1"
    assert out[-1]["timestamp"] == NOW and out[0]["identifier"] == "u0-mfx1"


def test_a_usage_file_without_any_error_field_re_sends_nothing_valid(tmp_path: Path) -> None:
    """Billing safety kept: no row carries an error, so valid rows (maybe billed) go nowhere,
    even when a payload key is spelt like an error field."""
    rows = [usage("a"), usage("b", timestamp=NOW * 1000)]
    rows[0]["payload"]["code"] = "x"  # a payload key, not an error field
    rows[0]["payload"]["message"] = "y"
    summary = remediate(write(tmp_path / "usage.jsonl", rows), tmp_path / "out")
    assert (summary["valid"], summary["corrected"]) == (1, 1)
    assert [row["identifier"] for row in written(summary["outputs"]["corrected"])] == ["b-mfx1"]
