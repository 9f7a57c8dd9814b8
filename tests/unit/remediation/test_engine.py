"""Correctors (table-driven, positive and negative), conservation, determinism, identifiers."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediation.engine import remediate
from remediation.errors import BadRules
from remediation.formats import FileFormat, read_records
from remediation.identifiers import Ancestor, Lineage, derived_identifier, row_identifier
from remediation.meters import Meter
from remediation.outputs import PlannedOutput, output_name
from remediation.records import UsageRecord
from remediation.rules import load_rules

NOW = 1_764_000_000
METERS = [
    Meter("m1", "api_requests"),
    Meter("m2", "tokens_v1", status="inactive"),
    Meter("m3", "tokens", value_key="tokens", customer_key="account"),
    Meter("m4", "api_calls"),
    Meter("m5", "api_callz"),
    Meter("m6", "regional", dimension_keys=("region",)),
]
RULES = load_rules("""
[customers]
"acme-42" = "cus_Q1a2B3c4"
[event_names]
"api-call" = "api_requests"
[meter_successors]
"tokens_v1" = "tokens"
[dimension_aliases]
region = ["zone"]
""")


def rec(
    ts: object = NOW,
    event: str | None = "api_requests",
    code: str | None = None,
    ident: str | None = "id1",
    **payload: object,
) -> UsageRecord:
    if not payload:
        payload = {"stripe_customer_id": "cus_1", "value": "5"}
    return UsageRecord(1, ident, ts, event, dict(payload), {}, code, None)


def run_one(
    record: UsageRecord, tmp_path: Path, **kwargs: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Remediate one record of a failed-records input; return (summary, the row as written)."""
    kwargs.setdefault("rejected", True)
    result = remediate(
        [record],
        source="in.jsonl",
        fmt=FileFormat.JSONL,
        meters=METERS,
        rules=kwargs.pop("rules", RULES),
        now=NOW,
        out_dir=tmp_path,
        **kwargs,
    )
    (output,) = result.outputs
    (row,) = [json.loads(line) for line in output.path.read_text().splitlines()]
    return result.summary, row


CASES = [
    # (record, expected outcome, field checks on the written row)
    (rec(NOW * 1000, code="timestamp_in_future"), "corrected", {"timestamp": NOW}),
    # whole seconds go out as a JSON number, however they were read (Stripe's S3 format)
    (rec(str(NOW * 1000), code="timestamp_in_future"), "corrected", {"timestamp": NOW}),
    (rec((NOW + 86400 * 3) * 1000, code="timestamp_in_future"), "quarantined", {}),
    (rec(NOW + 1800, code="timestamp_in_future"), "corrected", {"timestamp": NOW}),
    (rec(NOW + 7200, code="timestamp_in_future"), "quarantined", {}),
    (rec("2025-11-24T15:00:00Z"), "corrected", {"timestamp": NOW - 3600}),
    (rec(NOW - 40 * 86400, code="timestamp_too_far_in_past"), "quarantined", {}),
    (
        rec(code="meter_event_invalid_value", stripe_customer_id="c", value="1,234"),
        "corrected",
        {"payload": {"stripe_customer_id": "c", "value": "1234"}},
    ),
    (
        rec(code="meter_event_invalid_value", stripe_customer_id="c", value=' "12.0" '),
        "corrected",
        {"payload": {"stripe_customer_id": "c", "value": "12"}},
    ),
    (
        rec(code="meter_event_invalid_value", stripe_customer_id="c", value="1.5e3"),
        "corrected",
        {"payload": {"stripe_customer_id": "c", "value": "1500"}},
    ),
    (rec(code="meter_event_invalid_value", stripe_customer_id="c", value="abc"), "quarantined", {}),
    (rec(code="meter_event_invalid_value", stripe_customer_id="c", value="NaN"), "quarantined", {}),
    (rec(code="meter_event_invalid_value", stripe_customer_id="c", value=""), "quarantined", {}),
    (
        rec(code="meter_event_value_too_many_digits", stripe_customer_id="c", value="1.5"),
        "quarantined",
        {},
    ),
    (rec(event="API-Requests", code="no_meter"), "corrected", {"event_name": "api_requests"}),
    (rec(event="api-call", code="no_meter"), "corrected", {"event_name": "api_requests"}),
    (rec(event="api_cal", code="no_meter"), "quarantined", {}),  # api_calls vs api_callz
    (rec(event="nothing_like_it", code="no_meter"), "quarantined", {}),
    (
        rec(event="tokens_v1", code="archived_meter"),
        "corrected",
        {"event_name": "tokens", "payload": {"account": "cus_1", "tokens": "5"}},
    ),
    (
        rec(code="meter_event_customer_not_found", stripe_customer_id="acme-42", value="1"),
        "corrected",
        {"payload": {"stripe_customer_id": "cus_Q1a2B3c4", "value": "1"}},
    ),
    (
        rec(code="meter_event_customer_not_found", stripe_customer_id=" CUS_abc ", value="1"),
        "corrected",
        {"payload": {"stripe_customer_id": "cus_abc", "value": "1"}},
    ),
    (
        rec(code="meter_event_customer_not_found", stripe_customer_id="cus_x", value="1"),
        "quarantined",
        {},
    ),
    (
        rec(code="meter_event_no_customer_defined", customer_id="cus_9", value="1"),
        "corrected",
        {"payload": {"value": "1", "stripe_customer_id": "cus_9"}},
    ),
    (rec(code="meter_event_no_customer_defined", value="1"), "quarantined", {}),
    (
        rec(code="meter_event_value_not_found", stripe_customer_id="c", quantity="3"),
        "corrected",
        {"payload": {"stripe_customer_id": "c", "value": "3"}},
    ),
    (
        rec(code="meter_event_value_not_found", stripe_customer_id="c", qty="3", amount="4"),
        "quarantined",
        {},
    ),
    (
        rec(
            event="regional",
            code="missing_dimension_payload_keys",
            stripe_customer_id="c",
            value="1",
            zone="eu",
        ),
        "corrected",
        {"payload": {"stripe_customer_id": "c", "value": "1", "region": "eu"}},
    ),
    (
        rec(
            event="regional",
            code="meter_event_dimension_count_too_high",
            stripe_customer_id="c",
            value="1",
            region="eu",
            color="red",
        ),
        "corrected",
        {"payload": {"stripe_customer_id": "c", "value": "1", "region": "eu"}},
    ),
    (rec(code="brand_new_code"), "quarantined", {"mfx_code": "unclassified"}),
    (rec(), "valid", {"identifier": "id1-mfx1"}),
]


@pytest.mark.parametrize(("record", "outcome", "fields"), CASES)
def test_rule(record: UsageRecord, outcome: str, fields: dict[str, Any], tmp_path: Path) -> None:
    original = json.loads(json.dumps(record.payload))
    summary, row = run_one(record, tmp_path)
    assert summary[outcome] == 1, summary
    for key, value in fields.items():
        assert row[key] == value
    if outcome == "quarantined":
        assert row["payload"] == original and row["identifier"] == "id1"  # untouched
        assert row["mfx_reason"]
    else:
        assert row["identifier"] == "id1-mfx1" and "mfx_code" not in row


def test_rules_can_be_disabled_and_rounding_enabled(tmp_path: Path) -> None:
    rules = load_rules('[policy]\ndisabled_rules = ["match_event_name"]\nfuzzy_event_names = false')
    summary, _ = run_one(rec(event="API-Requests", code="no_meter"), tmp_path / "a", rules=rules)
    assert summary["quarantined"] == 1
    rules = load_rules("[policy]\nround_too_many_digits = true\nvalue_precision = 2")
    record = rec(code="meter_event_value_too_many_digits", stripe_customer_id="c", value="1.005")
    _, row = run_one(record, tmp_path / "b", rules=rules)
    assert row["payload"]["value"] == "1"


@pytest.mark.parametrize("text", ["[policy]\nnope = 1", "[customers]\nx = 1", "[[x]]", "a ="])
def test_bad_rules(text: str) -> None:
    with pytest.raises(BadRules):
        load_rules(text)


def test_identifiers() -> None:
    assert derived_identifier("abc", 1) == "abc-mfx1"
    assert derived_identifier("abc-r1", 1) == "abc-r1-mfx1"  # a customer's own spelling
    assert derived_identifier("abc", 2, {"abc-mfx2"}).endswith("-mfx2")
    assert derived_identifier("abc", 2, {"abc-mfx2"}) != "abc-mfx2"
    assert row_identifier("s", 3) != row_identifier("s", 4)
    assert row_identifier("s", 3).startswith("row-") and len(row_identifier("s", 3)) == 20


def test_repeat_failure_with_same_code_is_quarantined(tmp_path: Path) -> None:
    ours = Ancestor("e", "timestamp_in_future", 1)
    record = rec(NOW * 1000, code="timestamp_in_future", ident="e-mfx1")
    summary, row = run_one(record, tmp_path / "a", lineage=Lineage({"e-mfx1": ours}), generation=2)
    assert summary["quarantined"] == 1 and "generation 1" in row["mfx_reason"]
    other = Lineage({"e-mfx1": Ancestor("e", "no_meter", 1)})
    record = rec(NOW * 1000, code="timestamp_in_future", ident="e-mfx1")
    summary, row = run_one(record, tmp_path / "b", lineage=other, generation=2)
    assert summary["corrected"] == 1 and row["identifier"] == "e-mfx2"


def test_own_identifier_ending_in_r_digits_is_corrected(tmp_path: Path) -> None:
    """Without lineage saying we wrote it, `inv-r7` is a customer's identifier like any."""
    for ident in ("inv-r7", "x-r1000", "plain-r1", "e-mfx1"):
        record = rec(NOW * 1000, code="timestamp_in_future", ident=ident)
        summary, row = run_one(record, tmp_path / ident)
        assert summary["corrected"] == 1, row
        assert row["identifier"] == f"{ident}-mfx1"


def test_identifiers_keep(tmp_path: Path) -> None:
    _, row = run_one(rec(), tmp_path, identifiers="keep")
    assert row["identifier"] == "id1"


def test_split_layout_and_names(tmp_path: Path) -> None:
    records = [rec(ident=f"i{n}") for n in range(5)]
    result = remediate(
        records,
        source="dir/usage.csv",
        fmt=FileFormat.CSV,
        meters=METERS,
        rules=RULES,
        now=NOW,
        out_dir=tmp_path,
        max_rows=2,
        rejected=True,
        audit_output=True,
    )
    names = [o.path.name for o in result.outputs]
    assert names == [f"usage.corrected.r1.part000{n}.csv" for n in (1, 2, 3)]
    assert [o.rows for o in result.outputs] == [2, 2, 1]
    meta = result.outputs[0].metadata
    assert meta["mfx-rows"] == "2" and meta["mfx-kind"] == "corrected"
    assert len(meta["mfx-sha256"]) == 64 and meta["mfx-source"] == "dir/usage.csv"
    _check_digests(result.outputs, result.audit, result.summary["outputs"]["audit"])


def _check_digests(outputs: list[PlannedOutput], audit: PlannedOutput | None, path: str) -> None:
    """Each output's SHA-256 (kept as it was written) is its file's, in its metadata too; the
    audit file is an output of its own, with its lines as rows."""
    assert audit is not None and str(audit.path) == path
    for output in [*outputs, audit]:
        data = output.path.read_bytes()
        assert output.sha256 == hashlib.sha256(data).hexdigest() == output.metadata["mfx-sha256"]
        assert output.metadata["mfx-rows"] == str(output.rows)
    lines = audit.path.read_bytes().splitlines()
    assert audit.rows == len(lines) > 0 and audit.kind == "audit" == audit.metadata["mfx-kind"]
    assert json.loads(lines[-1])["kind"] == "summary"
    assert len(output_name("x" * 400, "quarantine", 1, FileFormat.JSONL)) <= 254


def test_nothing_valid_means_no_corrected_file(tmp_path: Path) -> None:
    result = remediate(
        [rec(code="timestamp_too_far_in_past")],
        source="a.csv",
        fmt=FileFormat.CSV,
        meters=METERS,
        rules=RULES,
        now=NOW,
        out_dir=tmp_path,
    )
    assert [o.kind for o in result.outputs] == ["quarantine"]
    audit = [
        json.loads(x) for x in Path(result.summary["outputs"]["audit"]).read_text().splitlines()
    ]
    assert [a["kind"] for a in audit] == ["quarantine", "summary"]


# --- property tests: conservation and determinism for any mix of rows ---------------------

row_strategy = st.builds(
    rec,
    st.sampled_from([NOW, NOW * 1000, NOW + 1000, NOW - 50 * 86400, "2025-11-24T00:00:00Z", "x"]),
    st.sampled_from(["api_requests", "API_requests", "tokens_v1", "zzz", None]),
    st.sampled_from(
        [
            None,
            "timestamp_in_future",
            "no_meter",
            "meter_event_invalid_value",
            "archived_meter",
            "odd_code",
            "meter_event_customer_not_found",
        ]
    ),
    st.sampled_from(["a", "b-r1", None]),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(row_strategy, max_size=12),
    fmt=st.sampled_from(list(FileFormat)),
    rejected=st.booleans(),
)
def test_conservation_and_determinism(
    rows: list[UsageRecord],
    fmt: FileFormat,
    rejected: bool,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    for number, row in enumerate(rows, 1):
        row.row_number = number
    digests = []
    for attempt in range(2):
        out = tmp_path_factory.mktemp(f"run{attempt}")
        copies = [
            UsageRecord(
                r.row_number,
                r.identifier,
                r.timestamp,
                r.event_name,
                dict(r.payload),
                {},
                r.error_code,
            )
            for r in rows
        ]
        result = remediate(
            copies,
            source=f"in.{fmt.value}",
            fmt=fmt,
            meters=METERS,
            rules=RULES,
            now=NOW,
            out_dir=out,
            rejected=rejected,
            audit_output=attempt == 1,  # the same bytes, hashed as written or not
        )
        s = result.summary
        assert s["input_rows"] == len(rows) == s["valid"] + s["corrected"] + s["quarantined"]
        written = []
        for output in result.outputs:
            with open(output.path, "rb") as handle:
                written += list(read_records(handle, fmt))
        # of a failed-records file, the corrected and quarantined rows, and the valid ones a
        # deliberate exception re-sends as they came (a timestamp Stripe found ahead that the
        # clock caught up with: counted valid, a `resend` audit line; README)
        resends = [
            line
            for line in map(json.loads, Path(s["outputs"]["audit"]).read_text().splitlines())
            if line["kind"] == "resend"
        ]
        resent = len(rows) if rejected else s["corrected"] + s["quarantined"] + len(resends)
        assert len(written) == resent
        if not rejected:
            assert len(resends) <= s["valid"]
        if attempt:
            _check_digests(result.outputs, result.audit, s["outputs"]["audit"])
        else:
            assert result.audit is None
        digests.append(
            [(o.path.name, o.sha256) for o in result.outputs]
            + [Path(s["outputs"]["audit"]).read_bytes()]
        )
    assert digests[0] == digests[1]


def test_csv_round_trip_through_engine(tmp_path: Path) -> None:
    data = (
        b"identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
        b"a,1764000000000,api_requests,cus_1,5,timestamp_in_future\n"
    )
    result = remediate(
        read_records(io.BytesIO(data), FileFormat.CSV),
        source="f.csv",
        fmt=FileFormat.CSV,
        meters=METERS,
        rules=RULES,
        now=NOW,
        out_dir=tmp_path,
    )
    text = result.outputs[0].path.read_bytes().decode()
    assert text == (
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\r\n"
        "a-mfx1,1764000000,api_requests,cus_1,5\r\n"
    )
