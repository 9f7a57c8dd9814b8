"""The sandbox against Stripe's published behaviour, where a lenient sandbox would let meterfix
pass its tests and still lose or double-bill usage at Stripe (sandbox/DEVIATIONS.md lists what
the sandbox does differently on purpose)."""

from __future__ import annotations

import re
import time

import stripe
from stripe.events import V1BillingMeterErrorReportTriggeredEventNotification

from sandbox.events import build_error_report_event
from tests.conftest import SandboxServer
from tests.integration.test_sandbox_connector import GOOD_AND_BAD, Put, bucket
from tests.integration.test_sandbox_delivery import Receiver, receiver

__all__ = ["bucket", "receiver"]

SIGNATURE = "[0-9a-f]{64}"


def test_test_mode_deliveries_carry_a_v0_signature(
    sandbox_server: SandboxServer, receiver: Receiver
) -> None:
    """sandbox/DEVIATIONS.md promises deliveries "exactly as Stripe sends them"; Stripe signs
    every test-mode event a second time under a `v0` scheme whose secret is not published, so
    that receivers prove they ignore schemes other than `v1` (`t=…,v1=…,v0=…`). The sandbox
    (always test mode) sent `t=…,v1=…` only, so a receiver that choked on `v0` passed."""
    meter = sandbox_server.admin.create_meter("api_requests")
    event = sandbox_server.admin.add_event(
        build_error_report_event(meter["id"], [("archived_meter", "m", "id-1")])
    )
    sandbox_server.admin.deliver(event["id"], receiver.url, ["whsec_old", "whsec_new"])
    ((raw, header),) = receiver.received
    assert re.fullmatch(rf"t=\d+,v1={SIGNATURE},v1={SIGNATURE},v0={SIGNATURE}", header), header
    note = sandbox_server.stripe_client().parse_event_notification(raw, header, "whsec_new")
    assert isinstance(note, V1BillingMeterErrorReportTriggeredEventNotification)
    assert note.related_object.id == meter["id"]
    timestamp, v0 = int(header[2:].split(",", 1)[0]), header.rsplit("v0=", 1)[1]
    for secret in ("whsec_old", "whsec_new"):  # v0 is signed with neither secret
        signed = stripe.WebhookSignature.generate_signature_header(raw.decode(), secret, timestamp)
        assert v0 not in signed


def test_connector_imports_an_object_uploaded_again_with_the_same_content(
    sandbox_server: SandboxServer, bucket: Put
) -> None:
    """Stripe's S3 connector "picks up objects whose LastModified is later than the last
    sync": an object uploaded again gets a new LastModified and is imported again, even with
    the same bytes (its rows with identifiers are deduplicated for 24 h; after that, billed
    twice). The sandbox told S3 objects apart by ETag alone, so the same content uploaded
    again was never imported again."""
    sandbox_server.admin.create_meter("api_requests")
    bucket("usage.csv", GOOD_AND_BAD)
    (first,) = sandbox_server.admin.connector_poll()
    time.sleep(1.1)  # S3's LastModified has one-second resolution
    bucket("usage.csv", GOOD_AND_BAD)

    (again,) = sandbox_server.admin.connector_poll()

    assert again["data"]["object"]["id"] != first["data"]["object"]["id"]
    assert again["data"]["object"]["result"]["skipped_duplicates"] == {"row_count": 1}
    assert [e["identifier"] for e in sandbox_server.admin.meter_events()] == ["r1"]
