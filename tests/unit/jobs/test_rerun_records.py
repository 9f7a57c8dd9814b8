"""A stored quarantined row read back for "re-run with current rules" is read as the JSON
readers read an object: a row of the wrong shape is a malformed row again, its values as they
came, never text made of them (`"['a', 1]"`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from remediation.engine import remediate
from remediation.filetypes import FileFormat
from remediation.meters import Meter
from remediation.rules import Rules
from service.jobs.rerun_records import _Entry, _usage_record

NOW = 1_764_000_000


def test_a_stored_row_reads_back_as_it_arrived() -> None:
    row = {
        "identifier": "a1",
        "timestamp": NOW,
        "event_name": "api_requests",
        "payload": {"stripe_customer_id": "acme-42", "value": "5"},
        "region": "eu",
        "mfx_code": "meter_event_customer_not_found",
        "mfx_reason": "customer 'acme-42' is not in the customer map",
    }
    code = "meter_event_customer_not_found"
    record = _usage_record(3, _Entry("a1", code, row, str(row["mfx_reason"])))
    assert (record.row_number, record.identifier, record.timestamp, record.event_name) == (
        3,
        "a1",
        NOW,
        "api_requests",
    )
    assert record.payload == row["payload"] and record.extra == {"region": "eu"}
    assert (record.error_code, record.malformed) == ("meter_event_customer_not_found", None)
    # a row that had no identifier gets the one its first run gave it
    entry = _Entry("row-0123", "no_meter", {"payload": {}}, "no meter")
    assert _usage_record(1, entry).identifier == "row-0123"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"payload": "abc"}, "payload is a JSON string, not an object"),
        ({"payload": [1, 2]}, "payload is a JSON list, not an object"),
        ({"event_name": {"n": "api_requests"}}, "event_name is a JSON object, not text"),
        ({"identifier": ["a", 1]}, "identifier is a JSON list, not text"),
    ],
)
def test_a_stored_row_of_the_wrong_shape_is_quarantined_again_as_it_came(
    tmp_path: Path, change: dict[str, Any], reason: str
) -> None:
    row = {
        "identifier": "b1",
        "timestamp": NOW * 1000,
        "event_name": "api_requests",
        "payload": {"stripe_customer_id": "cus_1", "value": "1"},
        **change,
    }
    stored = {**row, "mfx_code": "malformed_row", "mfx_reason": reason}
    record = _usage_record(1, _Entry("b1", "malformed_row", stored, reason))
    assert record.malformed == reason
    result = remediate(
        [record],
        source="rerun",
        fmt=FileFormat.JSONL,
        meters=[Meter("m1", "api_requests")],
        rules=Rules(),
        now=NOW,
        out_dir=tmp_path,
        rejected=True,
    )
    assert (result.summary["corrected"], result.summary["quarantined"]) == (0, 1)
    (path,) = result.summary["outputs"]["quarantine"]
    assert json.loads(Path(path).read_text(encoding="utf-8")) == stored


@pytest.mark.parametrize("rejected", [True, False])
def test_a_row_quarantined_because_stripe_took_its_identifier_is_never_sent_by_a_rerun(
    tmp_path: Path, rejected: bool
) -> None:
    """Quarantined `identifier_taken` (it arrived as `timestamp_in_future`, the code stored
    as the row's): its re-run validated it again, corrected it to `k1-mfx1`, billed twice."""
    reason = (
        "identifier 'k1' is also row 3's, which is valid and not re-sent: Stripe took one "
        "event under it, a second would be billed twice; not corrected"
    )
    row = {
        "identifier": "k1",
        "timestamp": NOW * 1000,
        "event_name": "api_requests",
        "payload": {"stripe_customer_id": "cus_1", "value": "1"},
    }
    stored = {**row, "mfx_code": "identifier_taken", "mfx_reason": reason}
    record = _usage_record(1, _Entry("k1", "timestamp_in_future", stored, reason))
    assert (record.error_code, record.error_message) == ("identifier_taken", reason)
    result = remediate(
        [record],
        source="rerun",
        fmt=FileFormat.JSONL,
        meters=[Meter("m1", "api_requests")],
        rules=Rules(),
        now=NOW,
        out_dir=tmp_path,
        rejected=rejected,
        loop_protection=False,
    )
    assert (result.summary["corrected"], result.summary["quarantined"]) == (0, 1)
    (path,) = result.summary["outputs"]["quarantine"]
    written = json.loads(Path(path).read_text(encoding="utf-8"))
    assert (written["mfx_code"], written["mfx_reason"]) == ("identifier_taken", reason)
    assert result.summary["outputs"]["corrected"] == []
