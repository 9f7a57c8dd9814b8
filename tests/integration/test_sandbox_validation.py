"""Asynchronous validation: invalid meter events become signed error reports at flush time."""

from __future__ import annotations

import time
from typing import Any

import pytest
import stripe
from stripe.events import (
    V1BillingMeterErrorReportTriggeredEventNotification,
    V1BillingMeterNoMeterFoundEventNotification,
)

from tests.conftest import SandboxServer
from tests.integration.test_sandbox_delivery import Receiver, receiver

__all__ = ["receiver"]


def _send(server: SandboxServer, events: list[dict[str, Any]]) -> None:
    session = server.stripe_client().v2.billing.meter_event_session.create()
    stream = server.stripe_client(session.authentication_token)
    stream.v2.billing.meter_event_stream.create({"events": events})  # type: ignore[typeddict-item]


def test_flush_delivers_signed_reports_with_identifiers(
    sandbox_server: SandboxServer, receiver: Receiver
) -> None:
    admin = sandbox_server.admin
    meter = admin.create_meter("api_requests")
    admin.create_customer("cus_1")
    sandbox_server.sandbox.webhook_url = receiver.url
    now = int(time.time())
    _send(
        sandbox_server,
        [
            {
                "event_name": "api_requests",
                "identifier": "ok-1",
                "payload": {"stripe_customer_id": "cus_1", "value": "1"},
            },
            {"event_name": "api_requests", "identifier": "no-cust", "payload": {"value": "1"}},
            {
                "event_name": "api_requests",
                "identifier": "bad-cust",
                "payload": {"stripe_customer_id": "cus_x", "value": "1"},
            },
            {
                "event_name": "api_requests",
                "identifier": "future",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)),
                "payload": {"stripe_customer_id": "cus_1", "value": "1"},
            },
            {"event_name": "ghost", "identifier": "ghost-1", "payload": {"value": "1"}},
        ],
    )
    assert [e["identifier"] for e in admin.meter_events()] == ["ok-1"]
    assert receiver.received == []  # nothing before the validation window closes

    events = admin.flush()
    assert len(events) == 2 and len(receiver.received) == 2
    client = sandbox_server.stripe_client()
    notes = [
        client.parse_event_notification(raw, header, sandbox_server.webhook_secret)
        for raw, header in receiver.received
    ]
    report = next(
        n for n in notes if isinstance(n, V1BillingMeterErrorReportTriggeredEventNotification)
    )
    assert report.related_object.id == meter["id"]
    full = report.fetch_event()
    assert full.data.reason.error_count == 3
    samples = {
        t.code: [s.request.identifier for s in t.sample_errors]
        for t in full.data.reason.error_types
    }
    assert samples == {
        "meter_event_no_customer_defined": ["no-cust"],
        "meter_event_customer_not_found": ["bad-cust"],
        "timestamp_in_future": ["future"],
    }
    no_meter = next(n for n in notes if isinstance(n, V1BillingMeterNoMeterFoundEventNotification))
    ghost = no_meter.fetch_event().data.reason.error_types[0]
    assert (ghost.code, ghost.sample_errors[0].request.identifier) == ("no_meter", "ghost-1")
    assert admin.flush() == []  # the queue is drained


def test_v1_meter_events_are_validated_too(sandbox_server: SandboxServer) -> None:
    meter = sandbox_server.admin.create_meter("old")
    sandbox_server.admin.deactivate_meter(meter["id"])
    sandbox_server.stripe_client().v1.billing.meter_events.create(
        {
            "event_name": "old",
            "payload": {"stripe_customer_id": "c", "value": "1"},
            "identifier": "arch-1",
        }
    )
    (event,) = sandbox_server.sandbox.flush_reports()  # callable directly, without HTTP
    error_type = event["data"]["reason"]["error_types"][0]
    assert error_type["code"] == "archived_meter"
    assert error_type["sample_errors"][0]["request"]["identifier"] == "arch-1"
    assert sandbox_server.admin.meter_events() == []


def test_duplicates_are_dropped_silently(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_meter("api_requests")
    event = {
        "event_name": "api_requests",
        "identifier": "dup",
        "payload": {"stripe_customer_id": "cus_1", "value": "4"},
    }
    _send(sandbox_server, [event, event])
    _send(sandbox_server, [event])
    assert len(sandbox_server.admin.meter_events()) == 1
    assert len(sandbox_server.admin.duplicates()) == 2
    assert sandbox_server.admin.flush() == []


def test_strict_customers_option(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_meter("api_requests")
    sandbox_server.admin.configure(strict_customers=True)
    _send(
        sandbox_server,
        [
            {
                "event_name": "api_requests",
                "identifier": "s1",
                "payload": {"stripe_customer_id": "cus_404", "value": "4"},
            }
        ],
    )
    (event,) = sandbox_server.admin.flush()
    assert event["data"]["reason"]["error_types"][0]["code"] == "meter_event_customer_not_found"


STRICT_CASES = [
    pytest.param({"timestamp": 1796032800}, "events[1].timestamp", id="unix-number-timestamp"),
    pytest.param({"timestamp": "1796032800"}, "events[1].timestamp", id="unix-text-timestamp"),
    pytest.param({"timestamp": "yesterday"}, "events[1].timestamp", id="free-text-timestamp"),
    pytest.param({"timestamp": "2026-11-30"}, "events[1].timestamp", id="date-only-timestamp"),
    pytest.param(
        {"payload": {"stripe_customer_id": "cus_1", "value": 5}},
        "events[1].payload.value",
        id="number-payload-value",
    ),
    pytest.param(
        {"payload": {"stripe_customer_id": None, "value": "5"}},
        "events[1].payload.stripe_customer_id",
        id="null-payload-value",
    ),
    pytest.param({"identifier": "i" * 101}, "events[1].identifier", id="identifier-101-chars"),
    pytest.param({"event_name": "e" * 101}, "events[1].event_name", id="event-name-101-chars"),
    pytest.param({"dimensions": {"region": "eu"}}, "events[1].dimensions", id="unknown-field"),
]


@pytest.mark.parametrize(("change", "param"), STRICT_CASES)
def test_stream_refuses_what_stripe_refuses(
    sandbox_server: SandboxServer, change: dict[str, Any], param: str
) -> None:
    sandbox_server.admin.create_meter("api_requests")
    good = {
        "event_name": "api_requests",
        "identifier": "good-1",
        "payload": {"stripe_customer_id": "cus_1", "value": "5"},
    }
    with pytest.raises(stripe.InvalidRequestError) as refused:
        _send(sandbox_server, [good, {**good, "identifier": "bad-1", **change}])
    error = refused.value
    assert error.http_status == 400
    assert isinstance(error.json_body, dict)
    assert error.json_body["error"]["type"] == "invalid_request_error"
    assert error.param == param and param in str(error.user_message)
    # the whole request is refused: nothing kept, nothing reported later
    assert sandbox_server.admin.meter_events() == []
    assert sandbox_server.admin.flush() == []


def test_stream_accepts_rfc3339_at_the_limits(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_meter("e" * 100)
    at = int(time.time()) - 60  # one reading of the clock: the assertion must not cross a second
    moment = time.strftime("%Y-%m-%dT%H:%M:%S.250+00:00", time.gmtime(at))
    event = {
        "event_name": "e" * 100,
        "identifier": "i" * 100,
        "timestamp": moment,
        "payload": {"stripe_customer_id": "cus_1", "value": "5"},
    }
    _send(sandbox_server, [event])
    (accepted,) = sandbox_server.admin.meter_events()
    assert accepted["identifier"] == "i" * 100
    assert accepted["timestamp"] == at


def test_v1_meter_event_parameters_are_checked(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_meter("api_requests")
    client = sandbox_server.stripe_client()
    payload = {"stripe_customer_id": "cus_1", "value": "1"}
    bad: list[dict[str, Any]] = [
        {"timestamp": "2026-11-30T10:00:00Z"},
        {"identifier": "i" * 101},
        {"event_name": "e" * 101},
    ]
    for change in bad:
        params: Any = {"event_name": "api_requests", "payload": payload, **change}
        with pytest.raises(stripe.InvalidRequestError) as refused:
            client.v1.billing.meter_events.create(params)
        assert refused.value.http_status == 400
    created = client.v1.billing.meter_events.create(
        {"event_name": "api_requests", "payload": payload, "timestamp": int(time.time())}
    )
    assert isinstance(created.timestamp, int)
    assert len(sandbox_server.admin.meter_events()) == 1


def test_bad_timestamps_never_produce_an_undocumented_code(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_meter("api_requests")
    client = sandbox_server.stripe_client()
    payload = {"stripe_customer_id": "cus_1", "value": "1"}
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.billing.meter_events.create(
            {"event_name": "api_requests", "payload": payload, "timestamp": "soon"}  # type: ignore[typeddict-item]
        )
    assert refused.value.code == "parameter_invalid_integer"
    with pytest.raises(stripe.InvalidRequestError):
        _send(
            sandbox_server,
            [{"event_name": "api_requests", "payload": payload, "timestamp": "soon"}],
        )
    far = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 40 * 86400))
    _send(sandbox_server, [{"event_name": "api_requests", "payload": payload, "timestamp": far}])
    (report,) = sandbox_server.admin.flush()
    codes = [t["code"] for t in report["data"]["reason"]["error_types"]]
    assert codes == ["timestamp_too_far_in_past"]
