"""The sandbox's S3 connector reads a JSON / JSON Lines record's payload from its nested
`payload` object only, as Stripe's JSON template has it; a top-level `payload_<key>` is an
extra field. Before, top-level `payload_<key>` fields were read as payload and overrode the
nested object. CSV keeps its `payload_<key>` columns."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

import pytest
import requests

from tests.conftest import SandboxServer
from tests.integration.test_sandbox_connector import Put, bucket

__all__ = ["bucket"]

NOW = int(time.time())
BASE = {"timestamp": NOW, "event_name": "api_requests"}
RECORDS: list[dict[str, Any]] = [
    # top-level payload_ keys only: no payload at all, refused for its customer key
    {"identifier": "flat", **BASE, "payload_stripe_customer_id": "cus_1", "payload_value": "5"},
    # the nested payload is the payload; the top-level payload_value is not
    {
        "identifier": "nested",
        **BASE,
        "payload": {"stripe_customer_id": "cus_1", "value": 7},
        "payload_value": "999",
    },
    # the nested payload lacks the value: a top-level payload_value does not stand in
    {
        "identifier": "no_value",
        **BASE,
        "payload_value": "3",
        "payload": {"stripe_customer_id": "cus_1"},
    },
]


def _render(suffix: str) -> bytes:
    if suffix == "json":
        return json.dumps(RECORDS).encode()
    return "".join(json.dumps(record) + "\n" for record in RECORDS).encode()


@pytest.mark.parametrize("suffix", ["json", "jsonl"])
def test_only_the_nested_payload_is_payload(
    sandbox_server: SandboxServer, bucket: Put, suffix: str
) -> None:
    sandbox_server.admin.create_meter("api_requests")
    bucket(f"usage.{suffix}", _render(suffix))
    (event,) = sandbox_server.admin.connector_poll()
    result = event["data"]["object"]["result"]
    assert (result["rows_processed"], result["successes"]["row_count"]) == (3, 1)
    (accepted,) = sandbox_server.admin.meter_events()
    assert (accepted["identifier"], accepted["payload"]) == (
        "nested",
        {"stripe_customer_id": "cus_1", "value": "7"},
    )
    headers = {"Authorization": f"Bearer {sandbox_server.api_key}"}
    url = f"{sandbox_server.url}/v1/files/{result['errors']['file']}/contents"
    failed = list(csv.DictReader(io.StringIO(requests.get(url, headers=headers, timeout=5).text)))
    assert [(row["identifier"], row["error_code"]) for row in failed] == [
        ("flat", "meter_event_no_customer_defined"),
        ("no_value", "meter_event_value_not_found"),
    ]
    # the failed-records file keeps the record's fields: the extra field under its own name
    assert failed[0]["payload_value"] == "5"


def test_csv_keeps_payload_columns(sandbox_server: SandboxServer, bucket: Put) -> None:
    sandbox_server.admin.create_meter("api_requests")
    content = (
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
        f"c1,{NOW},api_requests,cus_1,4\n"
    )
    bucket("usage.csv", content.encode())
    sandbox_server.admin.connector_poll()
    (accepted,) = sandbox_server.admin.meter_events()
    assert accepted["payload"] == {"stripe_customer_id": "cus_1", "value": "4"}
