"""JSON rows quarantined as they were written (README: a quarantined row is the row as it
came, with `mfx_code` and `mfx_reason`): a row that names no payload keeps naming none, in
the quarantine file of a JSON Lines file or a JSON array and in the rows `remediate` hands
the service to store; `"payload": null`, `{}` and a payload that is no object are kept as
written; the reason of a row with nothing in its payload says so. Each test failed on the code
before its fix (the docstring says what went wrong)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from remediation.engine import remediate
from remediation.formats import FileFormat, read_records
from remediation.meters import Meter
from remediation.outcomes import QuarantinedRow
from remediation.rules import Rules
from tests.integration.test_cli_remediate import meterfix

NOW = 1_764_000_000  # 2025-11-24T16:00:00Z
METERS = [Meter("m1", "api_requests")]
FORMATS = [FileFormat.JSONL, FileFormat.JSON]
NO_CUSTOMER = "meter_event_no_customer_defined"


def _row(identifier: str, **fields: Any) -> dict[str, Any]:
    """A row as written: its core keys, then `fields` in their order."""
    return {
        "identifier": identifier,
        "timestamp": NOW - 3600,
        "event_name": "api_requests",
        **fields,
    }


def _text(row: dict[str, Any]) -> str:
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False)


def _remediate(tmp_path: Path, fmt: FileFormat, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`rows` as a JSON Lines file or a JSON array (one element a line), remediated: the
    quarantined rows as written in the quarantine file and as stored for the service, each
    by identifier, and the summary."""
    texts = [_text(row) for row in rows]
    data = "[\n" + ",\n".join(texts) + "\n]\n" if fmt is FileFormat.JSON else "\n".join(texts)
    stored: list[QuarantinedRow] = []
    result = remediate(
        read_records(io.BytesIO(data.encode()), fmt),
        source=f"in.{fmt.value}",
        fmt=fmt,
        meters=METERS,
        rules=Rules(),
        now=NOW,
        out_dir=tmp_path / fmt.value,
        on_audit=lambda corrections, quarantined: stored.extend(quarantined),
    )
    written = []
    for path in result.summary["outputs"]["quarantine"]:
        lines = Path(path).read_text("utf-8").splitlines()
        if fmt is FileFormat.JSON:
            lines = [line.removesuffix(",") for line in lines if line not in ("[", "]")]
        written += [line for line in lines if line]
    return {
        "summary": result.summary,
        "written": {json.loads(line)["identifier"]: line for line in written},
        "stored": {row.identifier: row.record for row in stored},
    }


def _as_written(row: dict[str, Any], found: dict[str, Any]) -> str:
    """The row's text as written, closed by the code and reason it was quarantined with."""
    notes = json.loads(found["written"][row["identifier"]])
    closing = {key: notes[key] for key in ("mfx_code", "mfx_reason")}
    return _text(row | closing)


def _assert_as_written(rows: list[dict[str, Any]], found: dict[str, Any]) -> None:
    for row in rows:
        expected = _as_written(row, found)
        assert found["written"][row["identifier"]] == expected
        assert found["stored"][row["identifier"]] == expected


def test_cli_a_json_lines_row_without_payload_is_quarantined_as_written(tmp_path: Path) -> None:
    """What happened: `meterfix remediate` of a JSON Lines row with no `payload` key wrote its
    quarantine row with `"payload":{}` added, and said "no single aliased column for customer
    key 'stripe_customer_id'" of a row that has no payload at all."""
    bare = {"identifier": "a", "timestamp": 1764000000, "event_name": "calls"}
    sent = bare | {"identifier": "b", "payload": {"stripe_customer_id": "cus_1", "value": "3"}}
    (tmp_path / "in.jsonl").write_text(_text(bare) + "\n" + _text(sent) + "\n", "utf-8")
    meters = [{"id": "mtr_1", "event_name": "calls", "status": "active"}]
    (tmp_path / "meters.json").write_text(json.dumps(meters), "utf-8")
    args = ["in.jsonl", "--out", "out", "--meters", "meters.json", "--now", str(NOW), "--json"]
    proc = meterfix("remediate", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (line,) = (tmp_path / "out" / "in.quarantine.r1.jsonl").read_text("utf-8").splitlines()
    reason = (
        "the row has no payload: no customer key 'stripe_customer_id', and no alias holds a "
        "customer"
    )
    assert line == _text(bare | {"mfx_code": NO_CUSTOMER, "mfx_reason": reason})


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_of_one_shape_without_payload_are_written_without_one(
    tmp_path: Path, fmt: FileFormat
) -> None:
    """What happened: rows read as columns (two shapes, with and without a key of their own:
    cut out by the shape of the first batch's lines, matched to its layouts in the later
    batches) were written to the quarantine file and stored with `"payload":{}` added."""
    rows = [_row(f"a{n}") if n % 2 else _row(f"b{n}", note=f"n{n}") for n in range(20_000)]
    rows.append({"identifier": "c", "note": "no timestamp, no event name"})
    found = _remediate(tmp_path, fmt, rows)
    assert found["summary"]["quarantined"] == len(rows)
    _assert_as_written(rows, found)


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_of_many_layouts_without_payload_are_written_without_one(
    tmp_path: Path, fmt: FileFormat
) -> None:
    """What happened: a batch of many layouts (written all at once: `jsonrows.FEW_LAYOUTS`)
    wrote `"payload":{}` into its rows that named none."""
    rows = []
    for n in range(24):
        keys = {f"k{k}": k for k in range(n % 12)}
        payload = {"payload": {"value": "1"}} if n % 2 else {}
        rows.append(_row(f"m{n}", **payload, **keys))
    found = _remediate(tmp_path, fmt, rows)
    assert found["summary"]["quarantined"] == len(rows)
    _assert_as_written(rows, found)


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_written_record_by_record_keep_what_they_named(
    tmp_path: Path, fmt: FileFormat
) -> None:
    """What happened: rows without payload written record by record (beside a value that is
    an object, which only the record writer writes) got `"payload":{}`; rows with
    `"payload": null`, `{}` or a payload that is no object beside them are kept so."""
    rows = [
        _row("r1", meta={"batch": 7}),
        _row("r2"),
        {"identifier": "r3", "event_name": "api_requests", "note": 1},
        _row("r4", payload=None),
        _row("r5", payload={}),
        _row("r6", payload="x"),
        _row("r7", payload=[1]),
        _row("r8", payload=5),
        _row("r9", payload={"value": "2"}, meta={"batch": 7}),
    ]
    found = _remediate(tmp_path, fmt, rows)
    assert found["summary"]["quarantined"] == len(rows)
    _assert_as_written(rows, found)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_reason_says_the_row_has_nothing_in_its_payload(
    tmp_path: Path, fmt: FileFormat
) -> None:
    """What happened: a row with no payload, a null or an empty one was quarantined as having
    "no single aliased column for customer key 'stripe_customer_id'": there was no column to
    alias. The code is the one it always was."""
    rows = [
        _row("none"),
        _row("null", payload=None),
        _row("empty", payload={}),
        _row("held", payload={"value": "2"}, customer=None),  # a payload: as before
    ]
    found = _remediate(tmp_path, fmt, rows)
    notes = {key: json.loads(line) for key, line in found["written"].items()}
    no_customer = ": no customer key 'stripe_customer_id', and no alias holds a customer"
    assert notes["none"]["mfx_reason"] == "the row has no payload" + no_customer
    assert notes["null"]["mfx_reason"] == "the row's payload is null" + no_customer
    assert notes["empty"]["mfx_reason"] == "the row has no payload" + no_customer  # as a CSV's
    assert notes["held"]["mfx_reason"] == (
        "no single aliased column for customer key 'stripe_customer_id'"
    )
    codes = {key: note["mfx_code"] for key, note in notes.items()}
    assert codes == {
        "none": NO_CUSTOMER,
        "null": NO_CUSTOMER,
        "empty": NO_CUSTOMER,
        "held": NO_CUSTOMER,
    }
    _assert_as_written(rows, found)
