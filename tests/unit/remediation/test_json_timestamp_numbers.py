"""A corrected JSON or JSON Lines row's timestamp of whole unix seconds is a JSON number, as
Stripe's S3 file format shows it (`"timestamp": 1733500000`), whatever it was read as: a CSV
cell, a quarantined CSV row re-run as JSON Lines, a JSON string. Quarantined rows keep the
timestamp as it came; values are kept as the input gave them (Stripe's files allow numbers,
its API takes strings). Each path of the writer: on columns (`core.jsonlout`) and record by
record (`writers.RecordWriter`, a row holding a value written its own way)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from remediation.engine import remediate
from remediation.formats import FileFormat, read_records
from remediation.meters import Meter
from remediation.records import UsageRecord
from remediation.rules import Rules
from remediation.writers import record_object

NOW = 1_764_000_000  # 2025-11-24T16:00:00Z
METERS = [Meter("m1", "api_requests")]
FORMATS = [FileFormat.JSONL, FileFormat.JSON]


def _line(timestamp: str, value: str = '"5"', extra: str = "") -> str:
    """A row refused for its meter's name (`API-Requests`, corrected to `api_requests`), each
    field's JSON text as given."""
    return (
        '{"identifier":"k1","timestamp":' + timestamp + ',"event_name":"API-Requests",'
        '"payload":{"stripe_customer_id":"cus_1","value":' + value + "}" + extra + ","
        '"error":{"code":"no_meter","message":"No meter was found"}}'
    )


def _outputs(tmp_path: Path, fmt: FileFormat, rows: list[str]) -> dict[str, list[Any]]:
    data = "[\n" + ",\n".join(rows) + "\n]\n" if fmt is FileFormat.JSON else "\n".join(rows)
    result = remediate(
        read_records(io.BytesIO(data.encode()), fmt),
        source=f"in.{fmt.value}",
        fmt=fmt,
        meters=METERS,
        rules=Rules(),
        now=NOW,
        out_dir=tmp_path / fmt.value,
    )
    found: dict[str, list[Any]] = {}
    for kind in ("corrected", "quarantine"):
        texts = [Path(p).read_text("utf-8") for p in result.summary["outputs"][kind]]
        lines = [line for text in texts for line in text.splitlines()]
        lines = [line.removesuffix(",") for line in lines if line not in ("[", "]", "")]
        found[kind] = [json.loads(line) for line in lines]
    return found


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("extra", ["", ',"note":{"a":[1]}'], ids=["columns", "records"])
def test_a_corrected_rows_string_timestamp_of_whole_seconds_is_written_as_a_number(
    tmp_path: Path, fmt: FileFormat, extra: str
) -> None:
    """What happened: `"timestamp":"1763996400"` went out as a JSON string; Stripe's format
    shows a number, and whether its connector takes a string is not documented."""
    found = _outputs(tmp_path, fmt, [_line(f'"{NOW - 3600}"', extra=extra)])
    [row] = found["corrected"]
    assert row["timestamp"] == NOW - 3600 and row["event_name"] == "api_requests"
    assert row["payload"]["value"] == "5"  # the value as the input gave it


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_number_stays_a_number_and_a_value_number_is_kept(
    tmp_path: Path, fmt: FileFormat
) -> None:
    found = _outputs(tmp_path, fmt, [_line(str(NOW - 60), value="7")])
    [row] = found["corrected"]
    assert (row["timestamp"], row["payload"]["value"]) == (NOW - 60, 7)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_quarantined_row_keeps_its_timestamp_as_it_came(tmp_path: Path, fmt: FileFormat) -> None:
    old = f'"{NOW - 40 * 86_400}"'  # too old: quarantined, never moved
    found = _outputs(tmp_path, fmt, [_line(old)])
    [row] = found["quarantine"]
    assert row["timestamp"] == str(NOW - 40 * 86_400) and not found["corrected"]


@pytest.mark.parametrize(
    ("timestamp", "written"),
    [
        ("1764000000", 1764000000),
        (1764000000, 1764000000),
        ("01764000000", "01764000000"),  # not how a number is spelt: as it was
        (" 1764000000", " 1764000000"),
        ("-5", "-5"),
        ("1764000000.5", "1764000000.5"),
        ("2025-11-24T16:00:00Z", "2025-11-24T16:00:00Z"),
    ],
)
def test_record_object_writes_whole_seconds_as_a_number(timestamp: object, written: object) -> None:
    record = UsageRecord(1, "k1", timestamp, "api_requests", {"value": "5"}, {})
    assert record_object(record)["timestamp"] == written
    assert record_object(record, as_came=True)["timestamp"] == timestamp  # quarantined


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_timestamp_a_rule_made_seconds_of_is_written_as_a_number(
    tmp_path: Path, fmt: FileFormat
) -> None:
    """ISO-8601 text and milliseconds as text, made seconds by the timestamp rules: the
    seconds went out as a JSON string (`"1763996400"`)."""
    rows = [_line('"2025-11-24T15:00:00Z"'), _line(f'"{(NOW - 60) * 1000}"').replace("k1", "k2")]
    found = _outputs(tmp_path, fmt, rows)
    assert [row["timestamp"] for row in found["corrected"]] == [NOW - 3600, NOW - 60]
