"""Every validation code with a failing and a passing case."""

from __future__ import annotations

import time

import pytest

from sandbox.errors import StripeApiError
from sandbox.intake import Outcome, submit
from sandbox.objects import build_customer, build_meter
from sandbox.state import SandboxOptions, SandboxState
from sandbox.validation import ErrorCode, MeterEventInput, parse_rfc3339, stream_event, validate

NOW = time.time()
GOOD = {"stripe_customer_id": "cus_1", "value": "3"}


def _state(*, customers: bool = False, strict: bool = False) -> SandboxState:
    state = SandboxState(options=SandboxOptions(strict_customers=strict))
    for spec in ({"event_name": "api"}, {"event_name": "old", "status": "inactive"}):
        meter = build_meter(spec)
        state.meters[meter["id"]] = meter
    if customers:
        state.customers["cus_1"] = build_customer({"id": "cus_1"})
    return state


def _event(
    name: str = "api", payload: dict[str, str] | None = None, ts: int | None = None
) -> MeterEventInput:
    return MeterEventInput(name, dict(GOOD if payload is None else payload), "id-1", ts)


def _code(state: SandboxState, event: MeterEventInput) -> ErrorCode | None:
    rejection = validate(state, event, NOW)
    return None if rejection is None else rejection.code


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (_event("nope"), ErrorCode.NO_METER),
        (_event("old"), ErrorCode.ARCHIVED_METER),
        (_event(payload={"value": "3"}), ErrorCode.NO_CUSTOMER_DEFINED),
        (_event(payload={"stripe_customer_id": "cus_1"}), ErrorCode.VALUE_NOT_FOUND),
        (
            _event(payload={"stripe_customer_id": "cus_1", "value": "1,000"}),
            ErrorCode.INVALID_VALUE,
        ),
        (_event(payload={"stripe_customer_id": "cus_1", "value": "NaN"}), ErrorCode.INVALID_VALUE),
        (_event(ts=int(NOW) - 36 * 86400), ErrorCode.TOO_FAR_IN_PAST),
        (_event(ts=int(NOW) + 600), ErrorCode.IN_FUTURE),
        (_event(ts=int(NOW) * 1000), ErrorCode.IN_FUTURE),
    ],
)
def test_invalid_events_get_their_code(event: MeterEventInput, code: ErrorCode) -> None:
    assert _code(_state(), event) == code


@pytest.mark.parametrize(
    "event",
    [
        _event(),
        _event(payload={"stripe_customer_id": "cus_1", "value": "-2.5"}),
        _event(ts=int(NOW) - 34 * 86400),
        _event(ts=int(NOW) + 240),
        _event(ts=int(NOW) - 60),
    ],
)
def test_valid_events_pass(event: MeterEventInput) -> None:
    assert _code(_state(), event) is None


def test_messages_follow_stripe_samples() -> None:
    rejection = validate(_state(), _event(payload={"value": "1"}), NOW)
    assert rejection is not None
    assert rejection.message == "Customer mapping key stripe_customer_id not found in payload."
    no_meter = validate(_state(), _event("ghost"), NOW)
    assert no_meter is not None and no_meter.meter_id is None
    assert no_meter.message == "No meter was found matching event_name ghost."


def test_customer_not_found_only_when_customers_known_or_strict() -> None:
    unknown = _event(payload={"stripe_customer_id": "cus_2", "value": "1"})
    assert _code(_state(), unknown) is None
    assert _code(_state(customers=True), unknown) == ErrorCode.CUSTOMER_NOT_FOUND
    assert _code(_state(strict=True), unknown) == ErrorCode.CUSTOMER_NOT_FOUND
    assert _code(_state(customers=True), _event()) is None


def test_custom_keys_follow_the_meter() -> None:
    state = SandboxState()
    meter = build_meter(
        {
            "event_name": "tokens",
            "value_settings": {"event_payload_key": "tokens"},
            "customer_mapping": {"event_payload_key": "account", "type": "by_id"},
        }
    )
    state.meters[meter["id"]] = meter
    ok = MeterEventInput("tokens", {"account": "cus_1", "tokens": "9"}, "a", None)
    assert validate(state, ok, NOW) is None
    wrong = MeterEventInput("tokens", {"account": "cus_1", "value": "9"}, "b", None)
    assert _code(state, wrong) == ErrorCode.VALUE_NOT_FOUND


def test_duplicate_identifier_is_dropped_and_recorded() -> None:
    state = _state()
    assert submit(state, _event(), source="t")[0] == Outcome.ACCEPTED
    assert submit(state, _event(), source="t")[0] == Outcome.DUPLICATE
    assert len(state.meter_events) == 1
    assert [d["identifier"] for d in state.duplicates] == ["id-1"]


def test_rejected_events_queue_for_the_report_and_keep_their_identifier_free() -> None:
    state = _state()
    outcome, rejection = submit(state, _event("nope"), source="t")
    assert outcome == Outcome.REJECTED and rejection is not None
    assert [p.identifier for p in state.pending_errors] == ["id-1"]
    assert submit(state, _event(), source="t")[0] == Outcome.ACCEPTED


def test_stripe_documents_every_code_the_sandbox_reports() -> None:
    documented = {
        "meter_event_customer_not_found",
        "meter_event_no_customer_defined",
        "archived_meter",
        "timestamp_too_far_in_past",
        "timestamp_in_future",
        "meter_event_value_not_found",
        "meter_event_invalid_value",
        "no_meter",
    }
    assert {code.value for code in ErrorCode} <= documented


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2026-11-30T10:00:00Z", 1796032800),
        ("2026-11-30T10:00:00.123Z", 1796032800),
        ("2026-11-30T11:00:00+01:00", 1796032800),
        ("2026-11-30t10:00:00z", 1796032800),
    ],
)
def test_rfc3339_date_times_parse(text: str, seconds: int) -> None:
    assert parse_rfc3339(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["1796032800", "2026-11-30", "2026-11-30T10:00:00", "2026-11-30 10:00:00Z", "yesterday", ""],
)
def test_anything_but_rfc3339_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"event_name": "api", "payload": GOOD, "timestamp": 1796032800}, "events[0].timestamp"),
        ({"event_name": "api", "payload": GOOD, "timestamp": "1796032800"}, "events[0].timestamp"),
        ({"event_name": "api", "payload": {**GOOD, "value": 3}}, "events[0].payload.value"),
        ({"event_name": "api", "payload": {**GOOD, "value": None}}, "events[0].payload.value"),
        ({"event_name": "a" * 101, "payload": GOOD}, "events[0].event_name"),
        ({"event_name": "api", "identifier": "i" * 101, "payload": GOOD}, "events[0].identifier"),
        ({"event_name": "api", "identifier": 7, "payload": GOOD}, "events[0].identifier"),
        ({"event_name": 5, "payload": GOOD}, "events[0].event_name"),
        ({"event_name": "api"}, "events[0].payload"),
        ({"event_name": "api", "payload": GOOD, "extra": "x"}, "events[0].extra"),
    ],
)
def test_stream_event_parameters_are_checked_synchronously(item: object, param: str) -> None:
    with pytest.raises(StripeApiError) as refused:
        stream_event(0, item)
    assert (refused.value.status, refused.value.param) == (400, param)


def test_stream_event_at_the_limits_passes() -> None:
    item = {
        "event_name": "a" * 100,
        "identifier": "i" * 100,
        "payload": GOOD,
        "timestamp": "2026-11-30T10:00:00.5Z",
    }
    assert stream_event(3, item) == MeterEventInput("a" * 100, GOOD, "i" * 100, 1796032800)
