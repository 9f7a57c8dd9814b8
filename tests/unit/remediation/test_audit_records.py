"""The audit the service stores (`on_audit`: `Correction`s as a record batch of `CORRECTIONS`, and
`QuarantinedRow` records) says what the run's audit file says, line for line: same rows, same
order, same identifiers, codes, rules, fields and values (as text: `value_text` of the file's
JSON value). A quarantined row's record is the row as the record writer writes it in JSON Lines,
built on columns; its meter and customer are its event name and the value under its meter's
customer key."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediation.core.resent import RESEND_RULE
from remediation.engine import remediate
from remediation.formats import FileFormat, read_records
from remediation.meters import Meter
from remediation.outcomes import (
    CORRECTIONS,
    Correction,
    QuarantinedRow,
    corrections_of,
    value_text,
)
from remediation.writers import record_object

from .test_csv_columns import LINEAGE, METERS, NOW, ROWS, RULES, to_csv
from .test_jsonl_columns import rows, to_jsonl


def _run(
    data: bytes, fmt: FileFormat, out: Path, lineage: bool, meters: list[Meter] = METERS
) -> tuple[list[Any], list[Any]]:
    stored: list[Any] = []

    def on_audit(corrections: pa.RecordBatch, quarantined: list[QuarantinedRow]) -> None:
        assert corrections.schema == CORRECTIONS
        stored.extend([*corrections_of(corrections), *quarantined])

    result = remediate(
        read_records(io.BytesIO(data), fmt),
        source="failed",
        fmt=fmt,
        meters=meters,
        rules=RULES,
        now=NOW,
        out_dir=out,
        columns=None if fmt is FileFormat.JSONL else _header(data),
        on_audit=on_audit,
        lineage=LINEAGE if lineage else None,
    )
    audit = Path(result.summary["outputs"]["audit"]).read_text(encoding="utf-8")
    lines = [json.loads(line) for line in audit.splitlines()]
    return stored, [line for line in lines if line["kind"] != "summary"]


def _header(data: bytes) -> list[str]:
    return data.decode().splitlines()[0].split(",")


def _as_lines(stored: list[Any]) -> list[dict[str, Any]]:
    found = []
    for entry in stored:
        if not isinstance(entry, QuarantinedRow):
            assert isinstance(entry, Correction)
            found.append(
                {
                    # a row re-sent as it came has a line of its own kind, its identifier's
                    "kind": "resend" if entry.rule == RESEND_RULE else "correction",
                    "row": entry.row,
                    "identifier": entry.identifier,
                    "new_identifier": entry.new_identifier,
                    "code": entry.code,
                    "rule": entry.rule,
                    "field": entry.field,
                    "before": entry.before,
                    "after": entry.after,
                }
            )
        else:
            found.append(
                {
                    "kind": "quarantine",
                    "row": entry.row,
                    "identifier": entry.identifier,
                    "code": entry.code,
                    "mfx_code": entry.mfx_code,
                    "reason": entry.reason,
                }
            )
    return found


def _file_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for line in lines:
        line = {k: v for k, v in line.items() if k != "source"}
        if line["kind"] in ("correction", "resend"):
            line["before"], line["after"] = value_text(line["before"]), value_text(line["after"])
        found.append(line)
    return found


def _same(stored: list[Any], lines: list[dict[str, Any]]) -> None:
    corrections = [e for e in _as_lines(stored) if e["kind"] != "quarantine"]
    quarantined = [e for e in _as_lines(stored) if e["kind"] == "quarantine"]
    in_file = _file_lines(lines)
    assert corrections == [line for line in in_file if line["kind"] in ("correction", "resend")]
    assert quarantined == [line for line in in_file if line["kind"] == "quarantine"]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS, lineage=st.booleans())
def test_csv_audit_records_say_what_the_audit_file_says(
    rows: list[list[str]], lineage: bool, tmp_path_factory: Any
) -> None:
    data = to_csv(rows)
    stored, lines = _run(data, FileFormat.CSV, tmp_path_factory.mktemp("a"), lineage)
    _same(stored, lines)
    _records_as_written(data, FileFormat.CSV, stored, METERS)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(objects=st.lists(rows(), min_size=1, max_size=40), lineage=st.booleans())
def test_jsonl_audit_records_say_what_the_audit_file_says(
    objects: list[dict[str, Any]], lineage: bool, tmp_path_factory: Any
) -> None:
    data = to_jsonl(objects)
    stored, lines = _run(data, FileFormat.JSONL, tmp_path_factory.mktemp("a"), lineage)
    _same(stored, lines)
    _records_as_written(data, FileFormat.JSONL, stored, METERS)


def test_lines_stay_in_row_order_when_a_later_round_changes_an_earlier_row(
    tmp_path: Path,
) -> None:
    """Found by the property above: row 2's event name is matched in the first round, row 1's
    in the second (after its timestamp rule), and the two changes, one rule to one field, are
    merged into one whose rows are [2, 1]; the audit file wrote them in that order."""
    payload = {"stripe_customer_id": "cus_1", "value": 5}
    objects = [
        {
            "event_name": "API-Requests",
            "timestamp": NOW,
            "payload": payload,
            "error": {"code": "timestamp_in_future", "message": "m"},
        },
        {"event_name": "api-requests", "payload": payload, "error": {"code": "no_meter"}},
    ]
    stored, lines = _run(to_jsonl(objects), FileFormat.JSONL, tmp_path, False)
    assert [line["row"] for line in lines] == [1, 2]
    assert [line["before"] for line in lines] == ["API-Requests", "api-requests"]
    _same(stored, lines)


def _records_as_written(
    data: bytes, fmt: FileFormat, stored: list[Any], meters: list[Meter]
) -> None:
    """Each quarantined row's record is its input row as the JSON Lines record writer writes
    it (`json.dumps` of `record_object`, code and reason last, compact, not ASCII-escaped),
    byte for byte; its meter is its event name, its customer the value under its meter's
    customer key (`stripe_customer_id` when no meter has the name), as text."""
    records = {r.row_number: r for r in read_records(io.BytesIO(data), fmt)}
    keys = {meter.event_name: meter.customer_key for meter in meters}
    held = [entry for entry in stored if isinstance(entry, QuarantinedRow)]
    for entry in held:
        record = records[entry.row]
        full = {
            **record_object(record, as_came=True),  # a quarantined row, as it came
            "mfx_code": entry.mfx_code,
            "mfx_reason": entry.reason,
        }
        assert entry.record == json.dumps(full, ensure_ascii=False, separators=(",", ":"))
        assert entry.meter == record.event_name
        key = keys.get(record.event_name or "", "stripe_customer_id")
        assert entry.customer == value_text(record.payload.get(key))


def test_quarantined_records_name_their_meter_and_customer(tmp_path: Path) -> None:
    """Rows of meters with their own customer keys, of no meter, and of values that are not
    text (a number, a boolean, a JSON null, an object: the record then goes record by
    record); in JSON Lines the stored record is the quarantine file's line."""
    meters = [*METERS, Meter("m7", "storage_gb", customer_key="account")]
    base = {"timestamp": NOW - 10**9, "error": {"code": "timestamp_too_far_in_past"}}
    objects = [
        {**base, "event_name": "storage_gb", "payload": {"account": "acc_1", "value": 1}},
        {**base, "event_name": "storage_gb", "payload": {"stripe_customer_id": "cus_x"}},
        {**base, "event_name": "api_requests", "payload": {"stripe_customer_id": 42}},
        {**base, "event_name": "unknown", "payload": {"stripe_customer_id": True}},
        {**base, "event_name": "api_requests", "payload": {"stripe_customer_id": None}},
        {**base, "identifier": "ü\u0001", "payload": {"stripe_customer_id": "cus_é"}},
    ]
    stored, _ = _run(to_jsonl(objects), FileFormat.JSONL, tmp_path / "plain", False, meters)
    held = [entry for entry in stored if isinstance(entry, QuarantinedRow)]
    assert [(q.meter, q.customer) for q in held] == [
        ("storage_gb", "acc_1"),
        ("storage_gb", None),
        ("api_requests", "42"),
        ("unknown", "True"),
        ("api_requests", None),
        (None, "cus_é"),
    ]
    _records_as_written(to_jsonl(objects), FileFormat.JSONL, stored, meters)
    (quarantine,) = (tmp_path / "plain").glob("*.quarantine.*")
    assert [q.record for q in held] == quarantine.read_text(encoding="utf-8").splitlines()
    nested = [*objects, {**base, "event_name": "storage_gb", "payload": {"account": {"a": 1}}}]
    stored, _ = _run(to_jsonl(nested), FileFormat.JSONL, tmp_path / "nested", False, meters)
    held = [entry for entry in stored if isinstance(entry, QuarantinedRow)]
    assert [(q.meter, q.customer) for q in held][-1] == ("storage_gb", "{'a': 1}")
    _records_as_written(to_jsonl(nested), FileFormat.JSONL, stored, meters)
