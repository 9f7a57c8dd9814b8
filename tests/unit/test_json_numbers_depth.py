"""JSON numbers keep the text they had in the file, and a JSON array element nested too deep
(or holding a number too long to read) is one quarantined row, not a failed file.

A JSON number with a fraction or an exponent was read as a Python float and written back as
`repr` spells it: `12345678901234567.25` went out as `1.2345678901234568e+16`,
`9007199254740993.5` as `9007199254740994.0`, `1e2` as `100.0`, none of it in the audit (a
billed value changed silently), and `99999999999999999999.5` was quarantined as `1e+20` while
the same value in a CSV is corrected. Every path is held to it: JSON Lines and JSON arrays
read as columns (layouts, shapes, the line reader, the array reader after the elements that
qualify), and the same rows read as records (`remediate` given a list), written on columns or
record by record (a row holding an object makes its batch so).
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from remediation.csvlayouts import CsvLayout
from remediation.engine import remediate
from remediation.formats import FileFormat, read_records
from remediation.meters import Meter
from remediation.poller import import_chunks
from remediation.rownames import RowNames
from remediation.rules import Rules
from remediation.validation import MeterIndex

NOW = 1_764_000_000
METERS = [Meter("m1", "api_requests")]
CODE = "timestamp_in_future"  # its rule moves the timestamp; the value is not its business

# (value as written in the file, value as the corrected file must carry it, the value's audit
# line as (before, after) JSON texts, None: the value is not changed)
VALUES: list[tuple[str, str, tuple[str, str] | None]] = [
    ("12345678901234567.25", "12345678901234567.25", None),
    ("9007199254740993.5", "9007199254740993.5", None),
    ("99999999999999999999.5", "99999999999999999999.5", None),
    ("0.1", "0.1", None),
    ("12.50", "12.50", None),
    ("-3.75", "-3.75", None),
    # JSON numbers with an exponent: numbers Stripe takes, judged by their value as always (a
    # usage file's row counted valid is never re-sent), written as they came
    ("1e2", "1e2", None),
    ("1.5E3", "1.5E3", None),
    ("2.5e-3", "2.5e-3", None),
]
EXPONENTS = 3  # the last VALUES: a CSV's text `1e2` is no number (normalized to `100`)


def line(n: int, value: str, extra: str = "") -> str:
    return (
        f'{{"identifier":"id{n}","timestamp":{NOW * 1000},"event_name":"api_requests",'
        f'"payload":{{"stripe_customer_id":"cus_1","value":{value}}}{extra},"error_code":"{CODE}"}}'
    )


def corrected_line(n: int, value: str, extra: str = "") -> str:
    return (
        f'{{"identifier":"id{n}-mfx1","timestamp":{NOW},"event_name":"api_requests",'
        f'"payload":{{"stripe_customer_id":"cus_1","value":{value}}}{extra}}}'
    )


def file_bytes(lines: list[str], fmt: FileFormat, separator: str = ",\n") -> bytes:
    if fmt is FileFormat.JSONL:
        return "\n".join(lines).encode() + b"\n"
    return ("[" + separator.join(lines) + "]\n").encode()


def run(data: bytes, fmt: FileFormat, out: Path, as_records: bool = False) -> dict[str, Any]:
    records: Any = read_records(io.BytesIO(data), fmt)
    result = remediate(
        list(records) if as_records else records,
        source=f"in.{fmt.value}",
        fmt=fmt,
        meters=METERS,
        rules=Rules(),
        now=NOW,
        out_dir=out,
        rejected=True,
    )
    summary = result.summary
    assert summary["input_rows"] == summary["valid"] + summary["corrected"] + summary["quarantined"]
    return summary


def written_lines(paths: list[str], fmt: FileFormat) -> list[str]:
    """The rows of output files, each as its text in the file."""
    rows: list[str] = []
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        if fmt is FileFormat.JSONL:
            rows += text.splitlines()
        else:
            assert text.startswith("[\n") and text.endswith("\n]\n")
            rows += text[2:-3].split(",\n")
    return rows


def audit_lines(summary: dict[str, Any]) -> list[str]:
    return Path(summary["outputs"]["audit"]).read_text(encoding="utf-8").splitlines()[:-1]


def value_audit(n: int, before: str, after: str, fmt: FileFormat) -> str:
    """The audit line of row `n`'s value, normalized by its rule, as the audit file holds it."""
    return (
        f'{{"kind": "correction", "source": "in.{fmt.value}", "row": {n}, "identifier": "id{n}", '
        f'"new_identifier": "id{n}-mfx1", "code": "{CODE}", "rule": "normalize_value", '
        f'"field": "payload.value", "before": {before}, "after": {after}}}'
    )


# Rows of plain value 5 around the odd ones: layouts are learned and matched on them, so the
# odd values meet each path (a layout's match, a shape, the line reader).
PLAIN_ROWS = 12


def rows_of(extra: str = "") -> tuple[list[str], list[str], list[str]]:
    """(input lines, expected corrected lines, expected value audit lines as (n, before,
    after) joined later)."""
    values = ["5"] * PLAIN_ROWS + [raw for raw, _, _ in VALUES] + ["5"] * PLAIN_ROWS
    written = ["5"] * PLAIN_ROWS + [out for _, out, _ in VALUES] + ["5"] * PLAIN_ROWS
    lines = [line(n, value, extra) for n, value in enumerate(values, start=1)]
    expected = [corrected_line(n, value, extra) for n, value in enumerate(written, start=1)]
    return lines, expected, values


PATHS = [
    pytest.param(FileFormat.JSONL, ",\n", False, id="jsonl-columns"),
    pytest.param(FileFormat.JSONL, ",\n", True, id="jsonl-records"),
    pytest.param(FileFormat.JSON, ",\n", False, id="array-columns"),
    pytest.param(FileFormat.JSON, ", ", False, id="array-columns-spaced"),
    pytest.param(FileFormat.JSON, ",\n", True, id="array-records"),
]


@pytest.mark.parametrize(("fmt", "separator", "as_records"), PATHS)
@pytest.mark.parametrize(
    "extra", ["", ',"meta":{"rate":0.10,"ratio":1e-2}'], ids=["flat", "object"]
)
def test_json_numbers_are_written_as_they_came_or_changed_under_an_audited_rule(
    tmp_path: Path, fmt: FileFormat, separator: str, as_records: bool, extra: str
) -> None:
    lines, expected, _ = rows_of(extra)
    summary = run(file_bytes(lines, fmt, separator), fmt, tmp_path, as_records)
    assert (summary["corrected"], summary["quarantined"]) == (len(lines), 0)
    assert written_lines(summary["outputs"]["corrected"], fmt) == expected
    audit = audit_lines(summary)
    value_lines = [entry for entry in audit if '"field": "payload.value"' in entry]
    changed = [(PLAIN_ROWS + at + 1, change) for at, (_, _, change) in enumerate(VALUES) if change]
    assert value_lines == [value_audit(n, before, after, fmt) for n, (before, after) in changed]
    fields = {json.loads(entry)["field"] for entry in audit}
    assert fields == {"timestamp"}  # nothing else changed, nothing silently


def test_the_json_values_are_those_the_same_csv_is_corrected_to(tmp_path: Path) -> None:
    """The CSV path is the yardstick: a value string it keeps, the JSON path keeps; one it
    normalizes, the JSON path normalizes to the same digits under the same rule."""
    header = ["identifier", "timestamp", "event_name", "payload_stripe_customer_id"]
    header += ["payload_value", "error_code"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    plain = VALUES[:-EXPONENTS]
    for n, (raw, _, _) in enumerate(plain, start=1):
        writer.writerow([f"id{n}", NOW * 1000, "api_requests", "cus_1", raw, CODE])
    result = remediate(
        read_records(io.BytesIO(buffer.getvalue().encode()), FileFormat.CSV),
        source="in.csv",
        fmt=FileFormat.CSV,
        meters=METERS,
        rules=Rules(),
        now=NOW,
        out_dir=tmp_path / "csv",
        columns=CsvLayout.from_header(header).columns(),
        rejected=True,
    )
    (path,) = result.summary["outputs"]["corrected"]
    with open(path, newline="") as handle:
        from_csv = [row["payload_value"] for row in csv.DictReader(handle)]
    lines = [line(n, raw) for n, (raw, _, _) in enumerate(plain, start=1)]
    summary = run(file_bytes(lines, FileFormat.JSONL), FileFormat.JSONL, tmp_path / "jsonl")
    rows = written_lines(summary["outputs"]["corrected"], FileFormat.JSONL)
    from_json = [row.split('"value":', 1)[1].split("}", 1)[0] for row in rows]
    assert from_json == from_csv == [out for _, out, _ in plain]


@pytest.mark.parametrize(("fmt", "separator", "as_records"), PATHS)
def test_a_json_number_past_the_digit_limit_is_quarantined_as_it_was_written(
    tmp_path: Path, fmt: FileFormat, separator: str, as_records: bool
) -> None:
    lines = [line(1, "5"), line(2, "123456789012345678901.5"), line(3, "5")]
    summary = run(file_bytes(lines, fmt, separator), fmt, tmp_path, as_records)
    assert (summary["corrected"], summary["quarantined"]) == (2, 1)
    reason = "value 123456789012345678901.5 has 21 integer digits; at most 20 allowed"
    quarantined = written_lines(summary["outputs"]["quarantine"], fmt)
    as_it_came = line(2, "123456789012345678901.5").replace(f',"error_code":"{CODE}"', "")
    notes = f',"mfx_code":"meter_event_value_too_many_digits","mfx_reason":"{reason}"}}'
    assert quarantined == [as_it_came[:-1] + notes]


# --- a JSON array element nested past any bound -------------------------------------------

DEEP_VALUES = {
    "array-1000": "[" * 1000 + "1" + "]" * 1000,
    "object-5000": '{"a":' * 5000 + "1" + "}" * 5000,
    "strings-with-brackets": '["]]]",' * 2000 + '"x"' + "]" * 2000,
}


@pytest.mark.parametrize("deep", list(DEEP_VALUES), ids=list(DEEP_VALUES))
@pytest.mark.parametrize("separator", [",\n", ", ", ",\n  "], ids=["lines", "spaced", "indented"])
@pytest.mark.parametrize("place", [0, 2, 4], ids=["first", "middle", "last"])
def test_a_json_array_element_nested_too_deep_is_one_quarantined_row(
    tmp_path: Path, deep: str, separator: str, place: int
) -> None:
    values = ["5"] * 5
    values[place] = DEEP_VALUES[deep]
    lines = [line(n, value) for n, value in enumerate(values, start=1)]
    started = time.monotonic()
    summary = run(file_bytes(lines, FileFormat.JSON, separator), FileFormat.JSON, tmp_path)
    assert time.monotonic() - started < 5
    assert (summary["corrected"], summary["quarantined"]) == (4, 1)
    expected = [corrected_line(n, "5") for n in range(1, 6) if n != place + 1]
    assert written_lines(summary["outputs"]["corrected"], FileFormat.JSON) == expected
    (quarantined,) = written_lines(summary["outputs"]["quarantine"], FileFormat.JSON)
    row = json.loads(quarantined)
    assert row["mfx_code"] == "malformed_row"
    assert row["mfx_reason"] == "element is nested deeper than 32 levels"
    assert row["raw"] == lines[place]  # whole, as a refused JSON line is
    (entry,) = [json.loads(e) for e in audit_lines(summary) if '"quarantine"' in e]
    assert (entry["row"], entry["mfx_code"]) == (place + 1, "malformed_row")


def test_json_lines_and_the_array_quarantine_a_deep_row_alike(tmp_path: Path) -> None:
    values = ["5", DEEP_VALUES["array-1000"], "5"]
    lines = [line(n, value) for n, value in enumerate(values, start=1)]
    reasons = {}
    for fmt in (FileFormat.JSONL, FileFormat.JSON):
        summary = run(file_bytes(lines, fmt), fmt, tmp_path / fmt.value)
        assert (summary["corrected"], summary["quarantined"]) == (2, 1)
        (quarantined,) = written_lines(summary["outputs"]["quarantine"], fmt)
        reasons[fmt] = json.loads(quarantined)["mfx_reason"]
    assert reasons == {
        FileFormat.JSONL: "line is nested deeper than 32 levels",
        FileFormat.JSON: "element is nested deeper than 32 levels",
    }


@pytest.mark.parametrize("bare", [False, True], ids=["in-payload", "bare-element"])
@pytest.mark.parametrize("separator", [",\n", ", "], ids=["lines", "spaced"])
@pytest.mark.parametrize("place", [0, 2, 4], ids=["first", "middle", "last"])
def test_a_json_array_element_with_a_number_too_long_to_read_is_one_quarantined_row(
    tmp_path: Path, bare: bool, separator: str, place: int
) -> None:
    """int() reads at most 4,300 digits: such an element failed the file ("item 3 holds a
    number too long to read"), where JSON Lines quarantine its line."""
    lines = [line(n, "5") for n in range(1, 6)]
    lines[place] = "9" * 5000 if bare else line(place + 1, "9" * 5000)
    summary = run(file_bytes(lines, FileFormat.JSON, separator), FileFormat.JSON, tmp_path)
    assert (summary["corrected"], summary["quarantined"]) == (4, 1)
    expected = [corrected_line(n, "5") for n in range(1, 6) if n != place + 1]
    assert written_lines(summary["outputs"]["corrected"], FileFormat.JSON) == expected
    (quarantined,) = written_lines(summary["outputs"]["quarantine"], FileFormat.JSON)
    row = json.loads(quarantined)
    assert (row["mfx_code"], row["raw"]) == ("malformed_row", lines[place])
    assert row["mfx_reason"] == "element holds a number too long to read (thousands of digits)"


@pytest.mark.parametrize("fmt", [FileFormat.JSONL, FileFormat.JSON])
def test_the_bundled_poller_sends_a_corrected_json_value_as_it_is_written(
    tmp_path: Path, fmt: FileFormat
) -> None:
    """The corrected file imported by the bundled poller: each value goes to Stripe as the
    file spells it (a float's repr sent `1.2345678901234568e+16`, refused or billed wrong)."""
    lines, _, _ = rows_of()
    summary = run(file_bytes(lines, fmt), fmt, tmp_path)
    (path,) = summary["outputs"]["corrected"]
    index = MeterIndex(METERS)
    with open(path, "rb") as stream:
        names = RowNames(Path(path).name, "t")
        chunks = list(import_chunks(read_records(stream, fmt), index, now=NOW, names=names))
    sent = [event["payload"]["value"] for chunk in chunks for event in chunk.events]
    assert [failed for chunk in chunks for failed in chunk.failed] == []
    # `12.50` is sent as its plain number `12.5`, as a JSON `2.0` is sent `2`; a number with an
    # exponent as its plain digits
    plain = {"12.50": "12.5", "1e2": "100", "1.5E3": "1500", "2.5e-3": "0.0025"}
    expected = [plain.get(out, out) for _, out, _ in VALUES]
    assert sent == ["5"] * PLAIN_ROWS + expected + ["5"] * PLAIN_ROWS
