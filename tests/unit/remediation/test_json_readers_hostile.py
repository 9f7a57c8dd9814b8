"""Hostile JSON rows through the JSON Lines and JSON array readers, held to the README: each row
corrected, valid or quarantined with a reason, every row counted once, nothing sent to Stripe
as another value than its file holds, no row that holds up the file. Each test failed on the
code before its fix (the docstring says what went wrong)."""

from __future__ import annotations

import io
import json
import resource
import time
from pathlib import Path
from typing import Any

import pytest

from remediation.engine import remediate
from remediation.formats import FileFormat, read_records
from remediation.jsonvalues import MAX_ROW_KEYS
from remediation.meters import Meter
from remediation.poller import import_chunks
from remediation.rownames import RowNames
from remediation.rules import Rules
from remediation.validation import MeterIndex

NOW = 1_764_000_000
METERS = [Meter("m1", "api_requests")]
FORMATS = [FileFormat.JSONL, FileFormat.JSON]
GOOD_ROWS = 60  # before and after the hostile row: layouts are learned, elements split
ERROR = ',"error":{"code":"meter_event_invalid_value","message":"rejected"}'


def _row(identifier: str, value: str, more: str = "", error: str = "") -> str:
    return (
        f'{{"identifier":"{identifier}","timestamp":{NOW - 3600},"event_name":"api_requests",'
        f'"payload":{{"stripe_customer_id":"cus_1","value":{value}{more}}}{error}}}'
    )


def _file(rows: list[str], fmt: FileFormat) -> bytes:
    if fmt is FileFormat.JSON:
        return ("[\n" + ",\n".join(rows) + "\n]\n").encode()
    return ("\n".join(rows) + "\n").encode()


def _among_good(hostile: str, error: str = "") -> list[str]:
    value = '"1,234"' if error else '"5"'  # corrected when Stripe refused it, else valid
    before = [_row(f"a{n}", value, error=error) for n in range(GOOD_ROWS)]
    after = [_row(f"b{n}", value, error=error) for n in range(GOOD_ROWS)]
    return [*before, hostile, *after]


def _remediated(tmp_path: Path, rows: list[str], fmt: FileFormat) -> dict[str, Any]:
    """`remediate` over the rows: its summary, its quarantine file's rows and the rows it hands
    the service to store."""
    stored: list[Any] = []
    result = remediate(
        read_records(io.BytesIO(_file(rows, fmt)), fmt),
        source=f"in.{fmt.value}",
        fmt=fmt,
        meters=METERS,
        rules=Rules(),
        now=NOW,
        out_dir=tmp_path / fmt.value,
        on_audit=lambda corrections, quarantined: stored.extend(quarantined),
    )
    summary = result.summary
    quarantine = []
    for path in summary["outputs"]["quarantine"] if fmt is not FileFormat.CSV else ():
        text = Path(path).read_text("utf-8")
        loaded = json.loads(text) if fmt is FileFormat.JSON else None
        quarantine += loaded or [json.loads(line) for line in text.split("\n") if line]
    return {"summary": summary, "quarantine": quarantine, "stored": stored}


def _polled(rows: list[str], fmt: FileFormat) -> tuple[list[dict[str, Any]], list[Any], int]:
    """What the bundled poller makes of the rows: the events it sends, its failed rows, and
    the rows it counted."""
    chunks = list(
        import_chunks(
            read_records(io.BytesIO(_file(rows, fmt)), fmt),
            MeterIndex(METERS),
            now=NOW,
            names=RowNames(f"in.{fmt.value}", "t"),
        )
    )
    events = [event for chunk in chunks for event in chunk.events]
    failed = [row for chunk in chunks for row in chunk.failed]
    return events, failed, sum(len(chunk.rows) for chunk in chunks)


UNDERFLOWS = ["1e-400", "-1e-400", "1E-999", "2.5e-330"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", UNDERFLOWS)
def test_a_number_that_underflows_to_zero_is_never_sent_as_zero(
    tmp_path: Path, fmt: FileFormat, value: str
) -> None:
    """README: a JSON number "changes only under a rule, with an audit line"; "the same rows
    as a CSV, JSON Lines or a JSON array are decided alike".

    What happened: `1e-400` is read by json as the float 0.0 (past a float's range the other
    way from `1e999`), and a number with an exponent is judged by its value: the row was
    counted `valid`, and the bundled poller sent it to Stripe with the value `0`, a value
    changed with nothing in the audit. The same row as a CSV is quarantined
    (`meter_event_invalid_value`), as a JSON `1e-20` is."""
    hostile = _row("u1", value)
    rows = _among_good(hostile)
    events, failed, counted = _polled(rows, fmt)
    assert counted == len(rows)
    assert [e["payload"]["value"] for e in events if e["identifier"] == "u1"] == [], (
        f"{value} sent to Stripe"
    )
    assert [(row.row_number, row.error_code) for row in failed] == [
        (GOOD_ROWS + 1, "meter_event_invalid_value")
    ]
    found = _remediated(tmp_path, rows, fmt)
    summary = found["summary"]
    assert (summary["input_rows"], summary["valid"], summary["quarantined"]) == (
        len(rows),
        len(rows) - 1,
        1,
    )
    (row,) = found["quarantine"]
    assert (row["identifier"], row["mfx_code"]) == ("u1", "meter_event_invalid_value")
    assert f'"value":{value}}}' in found["stored"][0].record  # as written
    assert found["stored"][0].row == GOOD_ROWS + 1
    csv = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
    csv += f"u1,{NOW - 3600},api_requests,cus_1,{value}\n"
    as_csv = _remediated(tmp_path / "csv", [csv.rstrip()], FileFormat.CSV)
    assert as_csv["summary"]["quarantined"] == 1


def _keys(count: int) -> str:
    return "".join(f',"k{n}":1' for n in range(count))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("where", ["payload", "row"])
def test_a_row_naming_more_keys_than_a_row_may_is_refused_as_written(
    tmp_path: Path, fmt: FileFormat, where: str
) -> None:
    """README, "Bounded input": "no file can hang, crash or exhaust the remediation or the
    poller"; "A row past a limit is quarantined with a reason that states the fact".

    What happened: every key of a row is a column of its batch, each one worked on by every
    check and writer: a row of 8,000 payload keys took 6 s, and one 12 MB row of 1,000,000
    keys (`"k0":1,"k1":1,...`) ran `meterfix remediate` for over 9 minutes, its memory past
    7 GB, before it was killed. Here 5,000 keys: the row was read, counted and corrected
    like any other."""
    count = 5000
    assert count > MAX_ROW_KEYS
    if where == "payload":
        hostile = _row("k1", '"1,234"', more=_keys(count), error=ERROR)
    else:
        hostile = _row("k1", '"1,234"', error=ERROR + _keys(count))
    rows = _among_good(hostile, error=ERROR)
    found = _remediated(tmp_path, rows, fmt)
    summary = found["summary"]
    assert (summary["input_rows"], summary["quarantined"]) == (len(rows), 1)
    assert summary["valid"] + summary["corrected"] == len(rows) - 1
    (row,) = found["quarantine"]
    assert (row["mfx_code"], row["raw"]) == ("malformed_row", hostile)
    named = count + 2 + 5  # its payload's two other keys, its own five
    assert row["mfx_reason"].endswith(
        f"names {named} keys (its own and its payload's); at most {MAX_ROW_KEYS} are read"
    )
    events, failed, counted = _polled(rows, fmt)
    assert "k1" not in [event["identifier"] for event in events]
    assert counted == len(rows)
    refused = [(r.error_code, r.extra.get("raw")) for r in failed if r.row_number == GOOD_ROWS + 1]
    assert refused == [("malformed_row", hostile)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_row_of_a_million_keys_is_read_in_bounded_time_and_memory(
    tmp_path: Path, fmt: FileFormat
) -> None:
    """The 12 MB row of 1,000,000 keys (over 9 minutes and 7 GB before): refused in seconds,
    kept whole in the quarantine file."""
    hostile = _row("k1", '"1,234"', more=_keys(1_000_000), error=ERROR)
    rows = _among_good(hostile, error=ERROR)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    found = _remediated(tmp_path, rows, fmt)
    assert time.monotonic() - started < 60
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 1000, f"peak memory grew {grown_mb:.0f} MB"
    (row,) = found["quarantine"]
    assert (row["mfx_code"], row["raw"]) == ("malformed_row", hostile)
    assert found["summary"]["corrected"] == len(rows) - 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_row_at_the_key_bound_is_read(tmp_path: Path, fmt: FileFormat) -> None:
    """The bound itself is read: a row naming `MAX_ROW_KEYS` keys is no malformed row."""
    more = MAX_ROW_KEYS - 2 - 5  # the payload's two and the row's own five
    hostile = _row("k1", '"1,234"', more=_keys(more), error=ERROR)
    rows = _among_good(hostile, error=ERROR)
    found = _remediated(tmp_path, rows, fmt)
    assert found["quarantine"] == []
    assert found["summary"]["corrected"] == len(rows)


def test_a_long_array_element_is_read_in_time_linear_in_its_length(tmp_path: Path) -> None:
    """README, "Bounded input": a JSON element is read up to 16 MiB; no file can hang the
    remediation.

    What happened: the array reader decoded an element from its start again each time 64 KiB
    more of it came in, so an element took time in the square of its length: a row of 12 MB
    (a note of 6,000,000 numbers, a valid row) took 27 s as an array element, against 3 s as
    a JSON Lines line (16 MiB: about 50 s, each such element of a file)."""
    note = ',"note":[' + ",".join(["1"] * 6_000_000) + "]"
    hostile = _row("n1", '"1,234"', error=ERROR + note)
    rows = _among_good(hostile, error=ERROR)
    took = {}
    for fmt in FORMATS:
        started = time.monotonic()
        found = _remediated(tmp_path, rows, fmt)
        took[fmt] = time.monotonic() - started
        assert (found["summary"]["corrected"], found["quarantine"]) == (len(rows), [])
    assert took[FileFormat.JSON] < 3 * took[FileFormat.JSONL] + 3, took
