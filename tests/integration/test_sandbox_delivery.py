"""Signed deliveries from the sandbox to a small local receiver, verified with the real SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import stripe
from flask import Flask, request
from stripe.events import (
    V1BillingMeterErrorReportTriggeredEventNotification,
    V1BillingMeterNoMeterFoundEventNotification,
)

from sandbox.events import (
    build_error_report_event,
    build_import_set_event,
    build_no_meter_found_event,
)
from tests.conftest import SandboxServer
from tests.servers import serve_wsgi


@dataclass
class Receiver:
    url: str
    received: list[tuple[bytes, str]] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    app = Flask("receiver")
    box = Receiver(url="")

    @app.post("/webhooks")
    def webhooks() -> tuple[str, int]:
        box.received.append((request.get_data(), request.headers.get("Stripe-Signature", "")))
        return '{"received": true}', box.status

    with serve_wsgi(app) as running:
        box.url = f"{running.url}/webhooks"
        yield box


def test_thin_delivery_verifies_and_parses(
    sandbox_server: SandboxServer, receiver: Receiver
) -> None:
    meter = sandbox_server.admin.create_meter("api_requests")
    event = sandbox_server.admin.add_event(
        build_error_report_event(meter["id"], [("no_meter", "m", "id-9")])
    )
    result = sandbox_server.admin.deliver(event["id"], receiver.url)
    assert result == {"status": 200, "body": '{"received": true}'}
    ((raw, header),) = receiver.received
    assert header.startswith("t=") and ",v1=" in header
    secret = sandbox_server.webhook_secret
    assert stripe.WebhookSignature.verify_header(raw.decode(), header, secret, tolerance=300)
    client = sandbox_server.stripe_client()
    notification = client.parse_event_notification(raw, header, secret)
    assert isinstance(notification, V1BillingMeterErrorReportTriggeredEventNotification)
    assert notification.related_object.id == meter["id"]
    assert "data" not in json.loads(raw)
    full = notification.fetch_event()
    assert full.data.reason.error_types[0].sample_errors[0].request.identifier == "id-9"


def test_no_meter_found_thin_delivery(sandbox_server: SandboxServer, receiver: Receiver) -> None:
    event = sandbox_server.admin.add_event(
        build_no_meter_found_event([("no_meter", "No meter was found", "id-1")])
    )
    sandbox_server.admin.deliver(event["id"], receiver.url)
    ((raw, header),) = receiver.received
    notification = sandbox_server.stripe_client().parse_event_notification(
        raw, header, sandbox_server.webhook_secret
    )
    assert isinstance(notification, V1BillingMeterNoMeterFoundEventNotification)
    assert notification.fetch_event().data.reason.error_types[0].code == "no_meter"


def test_snapshot_delivery_is_the_whole_event(
    sandbox_server: SandboxServer, receiver: Receiver
) -> None:
    import_set = {"id": "impset_1", "object": "data_management.import_set", "status": "failed"}
    event = sandbox_server.admin.add_event(build_import_set_event("failed", import_set))
    sandbox_server.admin.deliver(event["id"], receiver.url)
    ((raw, header),) = receiver.received
    parsed = stripe.Webhook.construct_event(raw, header, sandbox_server.webhook_secret)
    assert parsed.type == "data_management.import_set.failed"
    assert parsed.data.object["id"] == "impset_1"
    assert json.loads(raw) == event


def test_delivery_reports_receiver_status_and_rotation(
    sandbox_server: SandboxServer, receiver: Receiver
) -> None:
    receiver.status = 400
    event = sandbox_server.admin.add_event({"type": "v1.billing.meter.no_meter_found"})
    result = sandbox_server.admin.deliver(event["id"], receiver.url, ["whsec_old", "whsec_new"])
    assert result["status"] == 400
    ((raw, header),) = receiver.received
    assert header.count("v1=") == 2
    assert stripe.WebhookSignature.verify_header(raw.decode(), header, "whsec_new")


def test_delivery_to_unreachable_url(sandbox_server: SandboxServer) -> None:
    from tests.servers import free_port

    event = sandbox_server.admin.add_event({"type": "v1.billing.meter.no_meter_found"})
    result = sandbox_server.admin.deliver(event["id"], f"http://127.0.0.1:{free_port()}/x")
    assert result["status"] == 0
    assert "failed" in result["error"]
