"""The sandbox's Stripe API, driven through the real stripe SDK over loopback HTTP."""

from __future__ import annotations

import io
import time
from datetime import datetime
from typing import Any

import pytest
import requests
import stripe
from stripe.events import V1BillingMeterErrorReportTriggeredEvent

from sandbox.events import build_error_report_event
from tests.conftest import SandboxServer


def test_meters_list_filter_paginate_and_retrieve(sandbox_server: SandboxServer) -> None:
    admin = sandbox_server.admin
    created = [admin.create_meter(f"meter_{i}") for i in range(5)]
    inactive = admin.create_meter("old_meter")
    admin.deactivate_meter(inactive["id"])
    client = sandbox_server.stripe_client()

    first = client.v1.billing.meters.list({"status": "active", "limit": 2})
    assert first.has_more is True
    assert [m.event_name for m in first.data] == ["meter_4", "meter_3"]
    every = [m.id for m in first.auto_paging_iter()]
    assert sorted(every) == sorted(m["id"] for m in created)
    assert client.v1.billing.meters.list({"status": "inactive"}).data[0].id == inactive["id"]

    meter = client.v1.billing.meters.retrieve(created[0]["id"])
    assert meter.event_name == "meter_0"
    assert meter.value_settings.event_payload_key == "value"
    assert meter.customer_mapping.event_payload_key == "stripe_customer_id"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.billing.meters.retrieve("mtr_nope")
    assert missing.value.http_status == 404


def test_wrong_or_missing_key_is_401(sandbox_server: SandboxServer) -> None:
    client = sandbox_server.stripe_client("sk_test_wrong")
    with pytest.raises(stripe.AuthenticationError):
        client.v1.billing.meters.list()
    bare = requests.get(f"{sandbox_server.url}/v1/billing/meters", timeout=5)
    assert bare.status_code == 401
    assert bare.json()["error"]["type"] == "authentication_error"


def test_v2_event_retrieve_is_typed(sandbox_server: SandboxServer) -> None:
    meter = sandbox_server.admin.create_meter("api_requests")
    event = build_error_report_event(
        meter["id"], [("meter_event_no_customer_defined", "Customer key missing.", "id-1")]
    )
    stored = sandbox_server.admin.add_event(event)
    fetched = sandbox_server.stripe_client().v2.core.events.retrieve(stored["id"])
    assert isinstance(fetched, V1BillingMeterErrorReportTriggeredEvent)
    error_type = fetched.data.reason.error_types[0]
    assert error_type.code == "meter_event_no_customer_defined"
    assert error_type.sample_errors[0].request.identifier == "id-1"
    assert fetched.related_object.id == meter["id"]
    assert fetched.fetch_related_object().event_name == "api_requests"


def test_v2_event_missing_is_404(sandbox_server: SandboxServer) -> None:
    with pytest.raises(stripe.InvalidRequestError):
        sandbox_server.stripe_client().v2.core.events.retrieve("evt_missing")


def test_added_event_gets_id_and_created(sandbox_server: SandboxServer) -> None:
    stored = sandbox_server.admin.add_event({"type": "v1.billing.meter.no_meter_found"})
    assert stored["id"].startswith("evt_")
    assert stored["object"] == "v2.core.event"
    assert stored["created"].endswith("Z")
    snapshot = sandbox_server.admin.add_event({"type": "data_management.import_set.failed"})
    assert snapshot["object"] == "event"
    assert isinstance(snapshot["created"], int)


def test_customers_retrieve_and_search(sandbox_server: SandboxServer) -> None:
    admin = sandbox_server.admin
    admin.create_customer("cus_A", metadata={"external_id": "acme-42"})
    admin.create_customer("cus_B", metadata={"external_id": "other"})
    client = sandbox_server.stripe_client()
    assert client.v1.customers.retrieve("cus_A").to_dict()["metadata"] == {"external_id": "acme-42"}
    found = client.v1.customers.search({"query": "metadata['external_id']:'acme-42'"})
    assert [c.id for c in found.data] == ["cus_A"]
    assert client.v1.customers.search({"query": "metadata['external_id']:'zzz'"}).data == []
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.retrieve("cus_missing")


def test_files_upload_retrieve_and_stream_contents(sandbox_server: SandboxServer) -> None:
    content = b"identifier,event_name\n" + b"row,api_requests\n" * 10_000
    uploaded = sandbox_server.admin.upload_file(content, "failed.csv", "data_management_x")
    client = sandbox_server.stripe_client()
    meta = client.v1.files.retrieve(uploaded["id"])
    assert (meta.object, meta.filename, meta.purpose, meta.size, meta.type) == (
        "file",
        "failed.csv",
        "data_management_x",
        len(content),
        "csv",
    )
    assert meta.url == f"{sandbox_server.bases['files']}/v1/files/{uploaded['id']}/contents"
    headers = {"Authorization": f"Bearer {sandbox_server.api_key}"}
    with requests.get(meta.url, headers=headers, stream=True, timeout=5) as response:
        assert response.status_code == 200
        assert b"".join(response.iter_content(4096)) == content
    assert requests.get(meta.url, timeout=5).status_code == 401


def test_files_create_through_sdk(sandbox_server: SandboxServer) -> None:
    client = sandbox_server.stripe_client()
    created = client.v1.files.create(
        {"purpose": "dispute_evidence", "file": io.BytesIO(b"a,b\n1,2\n")}
    )
    assert created.size == 8
    headers = {"Authorization": f"Bearer {sandbox_server.api_key}"}
    body = requests.get(f"{sandbox_server.url}/v1/files/{created.id}/contents", headers=headers)
    assert body.content == b"a,b\n1,2\n"


def test_v1_meter_event_is_accepted_and_recorded(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_meter("api_requests")
    client = sandbox_server.stripe_client()
    now = int(time.time())
    created = client.v1.billing.meter_events.create(
        {
            "event_name": "api_requests",
            "payload": {"stripe_customer_id": "cus_1", "value": "25"},
            "identifier": "idem-1",
            "timestamp": now,
        }
    )
    assert created.identifier == "idem-1"
    (accepted,) = sandbox_server.admin.meter_events()
    assert accepted["payload"] == {"stripe_customer_id": "cus_1", "value": "25"}
    assert (accepted["event_name"], accepted["identifier"], accepted["timestamp"]) == (
        "api_requests",
        "idem-1",
        now,
    )
    assert accepted["received_at"] >= now


def _stream_client(server: SandboxServer, token: str) -> stripe.StripeClient:
    return server.stripe_client(token)


def test_meter_event_session_and_stream(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_meter("tokens", value_key="tokens")
    session = sandbox_server.stripe_client().v2.billing.meter_event_session.create()
    assert session.object == "v2.billing.meter_event_session"
    assert session.expires_at > session.created
    stream = _stream_client(sandbox_server, session.authentication_token)
    events: list[Any] = [
        {
            "event_name": "tokens",
            "identifier": f"t-{i}",
            "payload": {"stripe_customer_id": "cus_1", "tokens": str(i + 1)},
        }
        for i in range(3)
    ]
    stream.v2.billing.meter_event_stream.create({"events": events})
    accepted = sandbox_server.admin.meter_events()
    assert [e["identifier"] for e in accepted] == ["t-0", "t-1", "t-2"]
    assert accepted[2]["payload"]["tokens"] == "3"


def test_stream_rejects_bad_token_and_too_many_events(sandbox_server: SandboxServer) -> None:
    bad = _stream_client(sandbox_server, "mes_auth_unknown")
    one = [{"event_name": "x", "payload": {"value": "1"}}]
    with pytest.raises(stripe.AuthenticationError):
        bad.v2.billing.meter_event_stream.create({"events": one})  # type: ignore[typeddict-item]
    with pytest.raises(stripe.AuthenticationError):  # the API key is not a session token
        sandbox_server.stripe_client().v2.billing.meter_event_stream.create(
            {"events": one}  # type: ignore[typeddict-item]
        )
    token = sandbox_server.stripe_client().v2.billing.meter_event_session.create()
    good = _stream_client(sandbox_server, token.authentication_token)
    with pytest.raises(stripe.InvalidRequestError) as too_many:
        good.v2.billing.meter_event_stream.create({"events": one * 101})  # type: ignore[typeddict-item]
    assert too_many.value.http_status == 400


def test_expired_session_answers_as_stripe_does(sandbox_server: SandboxServer) -> None:
    """401, type `temporary_session_expired`: the SDK raises TemporarySessionExpiredError,
    which is not an AuthenticationError. Sessions live `meter_event_session_seconds`."""
    sandbox_server.admin.configure(meter_event_session_seconds=0.5)
    session = sandbox_server.stripe_client().v2.billing.meter_event_session.create()
    assert 0.4 < _seconds(session.expires_at) - _seconds(session.created) < 0.6
    stream = _stream_client(sandbox_server, session.authentication_token)
    time.sleep(0.6)
    with pytest.raises(stripe.TemporarySessionExpiredError) as expired:
        stream.v2.billing.meter_event_stream.create(
            {"events": [{"event_name": "x", "payload": {"value": "1"}}]}
        )
    assert not isinstance(expired.value, stripe.AuthenticationError)
    assert (expired.value.http_status, expired.value.code) == (
        401,
        "billing_meter_event_session_expired",
    )


def _seconds(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def test_fault_injection_then_sdk_retry_succeeds(sandbox_server: SandboxServer) -> None:
    stored = sandbox_server.admin.add_event({"type": "v1.billing.meter.no_meter_found"})
    sandbox_server.admin.inject_fault("GET", "/v2/core/events", 500, count=1)
    client = sandbox_server.stripe_client(max_network_retries=2)
    assert client.v2.core.events.retrieve(stored["id"]).id == stored["id"]
    paths = [(r["method"], r["path"]) for r in sandbox_server.admin.requests()]
    assert paths.count(("GET", f"/v2/core/events/{stored['id']}")) == 2


def test_fault_without_retry_raises(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.inject_fault("GET", "/v1/billing/meters", 503, count=1)
    client = sandbox_server.stripe_client(max_network_retries=0)
    with pytest.raises(stripe.APIError):
        client.v1.billing.meters.list()
    assert client.v1.billing.meters.list().data == []


def test_rate_limit_answers_429(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.configure(rate_limit_per_second=2)
    headers = {"Authorization": f"Bearer {sandbox_server.api_key}"}
    url = f"{sandbox_server.url}/v1/billing/meters"
    statuses = [requests.get(url, headers=headers, timeout=5).status_code for _ in range(5)]
    assert 429 in statuses
    assert statuses[0] == 200
    sandbox_server.admin.configure(rate_limit_per_second=0)
    assert requests.get(url, headers=headers, timeout=5).status_code == 200


def test_requests_log_redacts_authorization(sandbox_server: SandboxServer) -> None:
    sandbox_server.stripe_client().v1.billing.meters.list({"status": "active"})
    (logged,) = sandbox_server.admin.requests()
    assert logged["method"] == "GET"
    assert logged["query"] == {"status": "active"}
    assert sandbox_server.api_key not in str(logged["headers"])
    assert logged["headers"]["Authorization"] == "Bearer [redacted]"


def test_reset_forgets_everything(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_meter("api_requests")
    sandbox_server.admin.reset()
    assert sandbox_server.stripe_client().v1.billing.meters.list().data == []


def test_rate_limit_error_types_per_api_version(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.inject_fault("GET", "/v1/billing/meters", 429, count=1)
    sandbox_server.admin.inject_fault("POST", "/v2/billing/meter_event_session", 429, count=1)
    client = sandbox_server.stripe_client(max_network_retries=0)
    with pytest.raises(stripe.RateLimitError) as v1:
        client.v1.billing.meters.list()
    assert isinstance(v1.value.json_body, dict)
    assert v1.value.json_body["error"]["type"] == "invalid_request_error"
    assert v1.value.json_body["error"]["code"] == "rate_limit"
    with pytest.raises(stripe.RateLimitError) as v2:
        client.v2.billing.meter_event_session.create()
    assert isinstance(v2.value.json_body, dict)
    assert v2.value.json_body["error"]["type"] == "rate_limit"
