"""v1 parameters the sandbox refuses as Stripe does (400), where it used to ignore, accept or
clamp them: an unknown meter event parameter, a nested payload, a meter list `limit` outside
1..100, an unknown meter `status`. meterfix's own calls still pass."""

from __future__ import annotations

import time

import pytest
import requests
import stripe

from service.adapters.stripe_meters import StripeMeterSource
from tests.conftest import SandboxServer

EVENT = {
    "event_name": "api_requests",
    "payload[stripe_customer_id]": "cus_1",
    "payload[value]": "1",
}


def _post_event(server: SandboxServer, form: dict[str, str]) -> requests.Response:
    return requests.post(
        f"{server.bases['api']}/v1/billing/meter_events",
        data=form,
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=5,
    )


def _error(response: requests.Response) -> tuple[int, str | None, str | None]:
    error = response.json()["error"]
    return response.status_code, error.get("code"), error.get("param")


def test_unknown_meter_event_parameter_is_refused(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_meter("api_requests")
    response = _post_event(sandbox_server, {**EVENT, "bogus": "1"})
    assert _error(response) == (400, "parameter_unknown", "bogus")
    assert response.json()["error"]["message"] == "Received unknown parameter: bogus"
    client = sandbox_server.stripe_client()
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.billing.meter_events.create(
            {
                "event_name": "api_requests",
                "payload": {"stripe_customer_id": "cus_1", "value": "1"},
                "bogus": "1",  # type: ignore[typeddict-unknown-key]
            }
        )
    assert (refused.value.http_status, refused.value.code) == (400, "parameter_unknown")
    assert sandbox_server.admin.meter_events() == []


@pytest.mark.parametrize(
    ("name", "param"),
    [("payload[x][y]", "payload[x]"), ("payload[]", "payload[]"), ("payload", "payload")],
)
def test_a_payload_that_is_not_a_string_map_is_refused(
    sandbox_server: SandboxServer, name: str, param: str
) -> None:
    sandbox_server.admin.create_meter("api_requests")
    response = _post_event(sandbox_server, {**EVENT, name: "z"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert sandbox_server.admin.meter_events() == []


def test_nested_payload_through_the_sdk_is_refused(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_meter("api_requests")
    with pytest.raises(stripe.InvalidRequestError) as refused:
        sandbox_server.stripe_client().v1.billing.meter_events.create(
            {
                "event_name": "api_requests",
                "payload": {"stripe_customer_id": "cus_1", "value": {"n": "1"}},  # type: ignore[dict-item]
            }
        )
    assert refused.value.http_status == 400
    assert sandbox_server.admin.meter_events() == []


def test_the_form_meterfix_sends_is_still_accepted(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_meter("api_requests")
    form = {**EVENT, "identifier": "ok-1", "timestamp": str(int(time.time()))}
    assert _post_event(sandbox_server, form).status_code == 200
    assert [e["identifier"] for e in sandbox_server.admin.meter_events()] == ["ok-1"]


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("0", "This value must be greater than or equal to 1."),
        ("-1", "This value must be greater than or equal to 1."),
        ("101", "This value must be less than or equal to 100."),
        ("ten", "Invalid integer: ten"),
        ("１０", "Invalid integer: １０"),  # fullwidth digits: not an integer
    ],
)
def test_meter_list_limit_out_of_range_is_refused(
    sandbox_server: SandboxServer, limit: str, message: str
) -> None:
    response = requests.get(
        f"{sandbox_server.bases['api']}/v1/billing/meters",
        params={"limit": limit},
        headers={"Authorization": f"Bearer {sandbox_server.api_key}"},
        timeout=5,
    )
    assert _error(response) == (400, "parameter_invalid_integer", "limit")
    assert response.json()["error"]["message"] == message


def test_meter_list_unknown_status_is_refused(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_meter("api_requests")
    client = sandbox_server.stripe_client()
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.billing.meters.list({"status": "bogus"})  # type: ignore[typeddict-item]
    assert (refused.value.http_status, refused.value.param) == (400, "status")
    assert [m.event_name for m in client.v1.billing.meters.list({"status": "active"})] == [
        "api_requests"
    ]


def test_meterfix_still_lists_every_meter_at_the_limits(sandbox_server: SandboxServer) -> None:
    """meterfix pages with limit=100; 1 and 100 are both accepted."""
    names = [f"meter_{n:03d}" for n in range(101)]
    for name in names:
        sandbox_server.admin.create_meter(name)
    client = sandbox_server.stripe_client()
    catalog = StripeMeterSource(client)
    assert sorted(m.event_name for m in catalog.meters()) == names
    assert len(client.v1.billing.meters.list({"limit": 1}).data) == 1
    assert len(client.v1.billing.meters.list({"limit": 100}).data) == 100
