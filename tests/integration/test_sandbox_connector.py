"""The sandbox's S3 connector over a file:// bucket and a moto S3 bucket."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
import requests
import stripe
from botocore.config import Config
from stripe.events import V1BillingMeterErrorReportTriggeredEventNotification

from tests.conftest import SandboxServer
from tests.integration.test_sandbox_delivery import Receiver, receiver

__all__ = ["receiver"]

Put = Callable[[str, bytes], None]
NOW = int(time.time())
GOOD_AND_BAD = (
    "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
    f"r1,{NOW},api_requests,cus_1,5\n"
    f"r2,{NOW},api_requests,,6\n"
    f"r3,{NOW * 1000},api_requests,cus_1,7\n"
    f"r4,{NOW},api_requests,cus_1,abc\n"
).encode()


@pytest.fixture(params=["file", "s3"])
def bucket(request: pytest.FixtureRequest, tmp_path: Path, sandbox_server: SandboxServer) -> Put:
    """Point the sandbox at a fresh bucket; returns put(key, content)."""
    if request.param == "file":
        root = tmp_path / "bucket"
        root.mkdir()
        sandbox_server.sandbox.bucket_url = f"file://{root}"

        def put_file(key: str, content: bytes) -> None:
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(content)

        return put_file
    endpoint = request.getfixturevalue("s3_endpoint")
    config = Config(signature_version="s3v4", s3={"addressing_style": "path"})
    s3 = boto3.client("s3", endpoint_url=endpoint, config=config)
    s3.create_bucket(Bucket="usage")
    sandbox_server.sandbox.bucket_url = "s3://usage/incoming"
    sandbox_server.sandbox.s3_endpoint_url = endpoint

    def put_s3(key: str, content: bytes) -> None:
        s3.put_object(Bucket="usage", Key=f"incoming/{key}", Body=content)

    return put_s3


def _contents(server: SandboxServer, file_id: str) -> str:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    response = requests.get(f"{server.url}/v1/files/{file_id}/contents", headers=headers, timeout=5)
    response.raise_for_status()
    return response.text


def test_import_with_errors_writes_failed_records(
    sandbox_server: SandboxServer, bucket: Put, receiver: Receiver
) -> None:
    sandbox_server.admin.create_meter("api_requests")
    sandbox_server.sandbox.webhook_url = receiver.url
    bucket("2026/usage.csv", GOOD_AND_BAD)

    (event,) = sandbox_server.admin.connector_poll()
    assert event["type"] == "data_management.import_set.succeeded"
    import_set = event["data"]["object"]
    assert import_set["status"] == "succeeded_with_errors"
    assert import_set["source_object"] == "2026/usage.csv"
    result = import_set["result"]
    # r3 (milliseconds) is well formed: it became a meter event that Stripe rejects later
    assert (result["rows_processed"], result["successes"]["row_count"]) == (4, 2)
    assert result["errors"]["row_count"] == 2
    rows = list(csv.DictReader(io.StringIO(_contents(sandbox_server, result["errors"]["file"]))))
    assert [(r["identifier"], r["error_code"]) for r in rows] == [
        ("r2", "meter_event_no_customer_defined"),
        ("r4", "meter_event_invalid_value"),
    ]
    assert rows[1]["payload_value"] == "abc" and rows[0]["error_message"]
    assert [e["identifier"] for e in sandbox_server.admin.meter_events()] == ["r1"]
    assert _contents(sandbox_server, import_set["file"]).encode() == GOOD_AND_BAD

    ((raw, header),) = receiver.received
    delivered = stripe.Webhook.construct_event(raw, header, sandbox_server.webhook_secret)
    assert delivered.id == event["id"]
    assert sandbox_server.admin.connector_poll() == []  # never re-imported

    assert len(sandbox_server.admin.flush()) == 1  # the data problem arrives as a thin event
    client = sandbox_server.stripe_client()
    raw, header = receiver.received[1]
    note = client.parse_event_notification(raw, header, sandbox_server.webhook_secret)
    assert isinstance(note, V1BillingMeterErrorReportTriggeredEventNotification)
    (error_type,) = note.fetch_event().data.reason.error_types
    assert error_type.code == "timestamp_in_future"
    assert [s.request.identifier for s in error_type.sample_errors] == ["r3"]


def test_good_failed_and_ignored_objects(sandbox_server: SandboxServer, bucket: Put) -> None:
    sandbox_server.admin.create_meter("tokens", value_key="tokens")
    records = [
        {
            "identifier": f"j{i}",
            "timestamp": NOW,
            "event_name": "tokens",
            "payload": {"stripe_customer_id": "cus_1", "tokens": i + 1},
        }
        for i in range(2)
    ]
    bucket("a.json", json.dumps(records).encode())
    bucket("b.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in records))
    bucket("c.csv", b"identifier,payload_value\nx,1\n")
    bucket("quarantine/q.csv", GOOD_AND_BAD)
    bucket("a.json.meta.json", b"{}")

    events = sandbox_server.admin.connector_poll()
    by_key = {e["data"]["object"]["source_object"]: e for e in events}
    assert sorted(by_key) == ["a.json", "b.jsonl", "c.csv"]
    assert by_key["a.json"]["data"]["object"]["status"] == "succeeded"
    assert by_key["a.json"]["data"]["object"]["result"]["errors"] == {"file": None, "row_count": 0}
    # b.jsonl repeats a.json's identifiers: Stripe dedupes them silently
    assert by_key["b.jsonl"]["data"]["object"]["result"]["skipped_duplicates"] == {"row_count": 2}
    failed = by_key["c.csv"]
    assert failed["type"] == "data_management.import_set.failed"
    assert failed["data"]["object"]["status"] == "failed"
    assert "event_name" in failed["data"]["object"]["failed_reason"]
    accepted = sandbox_server.admin.meter_events()
    assert [(e["identifier"], e["payload"]["tokens"]) for e in accepted] == [
        ("j0", "1"),
        ("j1", "2"),
    ]
    assert len(sandbox_server.admin.import_sets()) == 3


def test_changed_object_is_a_new_import(sandbox_server: SandboxServer, bucket: Put) -> None:
    sandbox_server.admin.create_meter("api_requests")
    bucket("u.csv", b"identifier,event_name\n")
    assert sandbox_server.admin.connector_poll()[0]["data"]["object"]["failed_reason_code"] == (
        "empty_file"
    )
    assert sandbox_server.admin.connector_poll() == []
    time.sleep(0.01)
    bucket("u.csv", GOOD_AND_BAD)
    (event,) = sandbox_server.admin.connector_poll()
    assert event["data"]["object"]["result"]["rows_processed"] == 4
