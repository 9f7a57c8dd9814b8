"""A customer key holding an object, a list, a boolean or a fraction names no customer: the row
is quarantined as `meter_event_no_customer_defined` with a reason naming what it holds, on
columns and one row at a time alike, and never filled from an alias over what it holds.

What happened: such a row whose timestamp was corrected went out in the corrected file with
`{"id": "cus_1"}` (or `true`, `[]`, `1.5`) as its customer, to be refused by Stripe again."""

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
from remediation.rules import load_rules
from remediation.validation import MeterIndex, validate_record

NOW = 1_764_000_000
METERS = [Meter("m1", "api_requests")]
HELD = [{"id": "cus_1"}, ["cus_1"], True, False, {}, [], 1.5, {"a": {"b": 1}}]
FINE = ["cus_ok", 123, " cus_2"]


def _row(at: int, who: object, **more: Any) -> dict[str, Any]:
    return {
        "identifier": f"r{at}",
        "timestamp": (NOW - 60) * 1000,  # milliseconds: corrected
        "event_name": "api_requests",
        "payload": {"stripe_customer_id": who, "value": 5, **more},
        "error": {"code": "timestamp_in_future", "message": "m"},
    }


def _run(objects: list[dict[str, Any]], out: Path) -> tuple[list[Any], list[Any]]:
    data = "".join(json.dumps(o) + "\n" for o in objects).encode()
    remediate(
        read_records(io.BytesIO(data), FileFormat.JSONL),
        source="failed.jsonl",
        fmt=FileFormat.JSONL,
        meters=METERS,
        rules=load_rules('[aliases]\ncustomer = ["customer"]\n'),
        now=NOW,
        out_dir=out,
    )
    [corrected] = out.glob("*.corrected.*") or [None]
    [quarantine] = out.glob("*.quarantine.*")
    sent = [json.loads(x) for x in corrected.read_text().splitlines()] if corrected else []
    held = [json.loads(x) for x in quarantine.read_text().splitlines()]
    return sent, held


def test_a_customer_key_holding_no_customer_id_is_quarantined(tmp_path: Path) -> None:
    sent, held = _run([_row(at, c) for at, c in enumerate(FINE + HELD)], tmp_path)
    assert [(r["identifier"], r["payload"]["stripe_customer_id"]) for r in sent] == [
        ("r0-mfx1", "cus_ok"),
        ("r1-mfx1", 123),
        ("r2-mfx1", " cus_2"),
    ]
    assert [r["payload"]["stripe_customer_id"] for r in held] == HELD
    assert {r["mfx_code"] for r in held} == {"meter_event_no_customer_defined"}
    assert held[0]["mfx_reason"] == (
        'customer key stripe_customer_id holds {"id":"cus_1"}, which is no customer id'  # as JSON
    )


def test_an_alias_does_not_fill_over_what_the_customer_key_holds(tmp_path: Path) -> None:
    """Stripe's `meter_event_no_customer_defined` row with an alias beside a customer key
    holding a list: the list is no customer, and not overwritten unaudited by the alias."""
    row = _row(0, ["cus_1"], customer="cus_9")
    row["timestamp"] = NOW - 60
    row["error"] = {"code": "meter_event_no_customer_defined", "message": "m"}
    good = _row(1, None, customer="cus_9")  # an alias fills a missing customer, as before
    del good["payload"]["stripe_customer_id"]
    good["timestamp"], good["error"] = row["timestamp"], row["error"]
    sent, held = _run([row, good], tmp_path)
    assert [r["payload"] for r in sent] == [{"value": 5, "stripe_customer_id": "cus_9"}]
    assert [(r["identifier"], r["payload"]) for r in held] == [
        ("r0", {"stripe_customer_id": ["cus_1"], "value": 5, "customer": "cus_9"})
    ]
    assert held[0]["mfx_reason"].startswith('customer key stripe_customer_id holds ["cus_1"]')


@pytest.mark.parametrize("customer", HELD)
def test_the_row_check_says_the_same(customer: object) -> None:
    record = UsageRecord(
        1, "r", NOW - 60, "api_requests", {"stripe_customer_id": customer, "value": 1}
    )
    problem = validate_record(record, MeterIndex(METERS), NOW)
    assert problem is not None and problem.code == "meter_event_no_customer_defined"
    fine = UsageRecord(1, "r", NOW - 60, "api_requests", {"stripe_customer_id": 7, "value": 1})
    assert validate_record(fine, MeterIndex(METERS), NOW) is None
