"""The two meter error handlers read the full v2 event as Stripe documents it (and the guides)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from handlers import REGISTRY
from handlers.meter_error_reports import IncompleteEvent, parse_report
from handlers.records import ErrorSampleRecord, OutcomeStatus, RemediationKind
from tests.unit.handlers.fakes import RecordingContext

EVENTS = Path(__file__).resolve().parents[2] / "data" / "events"


def _event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return data


def _handle(event: dict[str, Any], ctx: RecordingContext) -> Any:
    return REGISTRY[event["type"]](event, ctx)


def test_error_report_triggered() -> None:
    ctx = RecordingContext()
    event = _event("v2_error_report_triggered")
    outcome = _handle(event, ctx)
    assert outcome.status is OutcomeStatus.RECORDED
    report = ctx.reports[event["id"]]
    assert ctx.remediations == [(RemediationKind.ERROR_REPORT, event["id"])]
    assert report.meter_id == "mtr_test_61RCjiqdTDC91zgip41IqPCzPnxqqSVc"
    assert report.validation_start == datetime(2024, 9, 26, 17, 46, 10, tzinfo=UTC)
    assert report.validation_end == datetime(2024, 9, 26, 17, 46, 20, tzinfo=UTC)
    assert (report.summary, report.error_count) == ("There is 1 invalid event", 1)
    assert [(t.code, t.error_count) for t in report.error_types] == [
        ("meter_event_no_customer_defined", 1)
    ]
    assert report.samples == [
        ErrorSampleRecord(
            "meter_event_no_customer_defined",
            "Customer mapping key stripe_customer_id not found in payload.",
            "cb447754-6880-45c2-8f2f-ef19b6ce81e9",
        )
    ]


def test_no_meter_found_has_no_meter() -> None:
    ctx = RecordingContext()
    event = _event("v2_no_meter_found")
    _handle(event, ctx)
    report = ctx.reports[event["id"]]
    assert report.meter_id is None and report.error_types[0].code == "no_meter"
    assert report.samples[0].identifier == "df5d4002-515b-4090-8fe2-a1b1f6f5b945"


def test_guide_shape_idempotency_key_and_unknown_codes() -> None:
    ctx = RecordingContext()
    event = _event("v2_error_report_guide_shape")
    _handle(event, ctx)
    report = ctx.reports[event["id"]]
    assert [s.identifier for s in report.samples] == ["row-1", "row-2"]
    assert [t.code for t in report.error_types] == ["timestamp_in_future", "some_code_we_never_saw"]
    assert report.error_count == 3 and report.detail["context"] == "acct_123"


def test_same_event_twice_is_unchanged() -> None:
    ctx = RecordingContext()
    event = _event("v2_no_meter_found")
    _handle(event, ctx)
    assert _handle(event, ctx).status is OutcomeStatus.UNCHANGED


def test_missing_pieces_never_crash() -> None:
    ctx = RecordingContext()
    event = {"id": "evt_x", "type": "v1.billing.meter.no_meter_found", "data": {"reason": None}}
    _handle(event, ctx)
    report = ctx.reports["evt_x"]
    assert (report.error_count, report.error_types, report.samples) == (0, [], [])
    assert report.validation_start is None


def test_thin_payload_without_data_is_refused() -> None:
    with pytest.raises(IncompleteEvent):
        _handle(_event("thin_error_report_triggered"), RecordingContext())


def test_a_code_is_cut_to_its_column_after_it_is_read_in_lower_case() -> None:
    """A code is trimmed and read in lower case (as a failed-records file's); cut first, a
    lower case could be longer than its column (`İ` lower-cased is two characters)."""
    event = _report_with_code("\u0130" * 300)
    (kind,) = parse_report(event).error_types
    assert len(kind.code) == 255 and kind.code.endswith("\u2026")
    assert (
        parse_report(_report_with_code(" METER_EVENT_CUSTOMER_NOT_FOUND ")).error_types[0].code
        == "meter_event_customer_not_found"
    )


def _report_with_code(code: str) -> dict[str, Any]:
    event = _event("v2_error_report_triggered")
    event["data"]["reason"]["error_types"][0]["code"] = code
    return event


def test_a_report_of_a_great_many_samples_keeps_the_first_thousand_and_its_count() -> None:
    """A fetched event of 300,000 sample errors was stored a row each (1.5 GB of the worker's
    memory): the first MAX_SAMPLES are kept, the count is all of them."""
    from handlers.meter_error_reports import MAX_SAMPLES

    event = _event("v2_error_report_triggered")
    [error_type] = event["data"]["reason"]["error_types"]
    sample = error_type["sample_errors"][0]
    error_type["sample_errors"] = [
        {**sample, "request": {"identifier": f"id-{n}"}} for n in range(20_000)
    ]
    error_type["error_count"] = 1
    report = parse_report(event)
    assert MAX_SAMPLES == 1000
    assert [s.identifier for s in report.samples] == [f"id-{n}" for n in range(1000)]
    assert report.error_count == 20_000
