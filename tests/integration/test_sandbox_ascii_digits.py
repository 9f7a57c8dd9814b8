"""Numbers and timestamps the sandbox takes are ASCII digits only: before, Unicode digits
(Arabic-Indic U+0663, fullwidth U+FF11 U+FF12) passed its checks and int()/float() read them."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pytest
import requests
import stripe

from tests.conftest import SandboxServer
from tests.integration.test_sandbox_connector import Put, bucket

__all__ = ["bucket"]

PAYLOAD = {"stripe_customer_id": "cus_1", "value": "1"}
# str.translate tables: ASCII digits to Arabic-Indic and to fullwidth digits
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
ODD_VALUES = ["٣", "１２", "1.٥", "-１"]


def _send(server: SandboxServer, events: list[dict[str, Any]]) -> None:
    session = server.stripe_client().v2.billing.meter_event_session.create()
    stream = server.stripe_client(session.authentication_token)
    stream.v2.billing.meter_event_stream.create({"events": events})  # type: ignore[typeddict-item]


def _reported_codes(server: SandboxServer) -> dict[str, int]:
    (report,) = server.admin.flush()
    return {t["code"]: t["error_count"] for t in report["data"]["reason"]["error_types"]}


@pytest.mark.parametrize("table", [ARABIC_INDIC, FULLWIDTH], ids=["arabic-indic", "fullwidth"])
def test_v1_timestamp_in_unicode_digits_is_not_an_integer(
    sandbox_server: SandboxServer, table: dict[int, str]
) -> None:
    sandbox_server.admin.create_meter("api_requests")
    timestamp = str(int(time.time())).translate(table)
    response = requests.post(
        f"{sandbox_server.bases['api']}/v1/billing/meter_events",
        data={"event_name": "api_requests", "timestamp": timestamp, **_form(PAYLOAD)},
        headers={"Authorization": f"Bearer {sandbox_server.api_key}"},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parameter_invalid_integer"
    assert sandbox_server.admin.meter_events() == []


def test_v1_values_in_unicode_digits_are_invalid(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_meter("api_requests")
    client = sandbox_server.stripe_client()
    for n, value in enumerate(ODD_VALUES):
        client.v1.billing.meter_events.create(
            {
                "event_name": "api_requests",
                "identifier": f"v{n}",
                "payload": {**PAYLOAD, "value": value},
            }
        )
    assert sandbox_server.admin.meter_events() == []
    assert _reported_codes(sandbox_server) == {"meter_event_invalid_value": len(ODD_VALUES)}


def test_stream_values_and_timestamps_in_unicode_digits(sandbox_server: SandboxServer) -> None:
    sandbox_server.admin.create_meter("api_requests")
    events = [
        {"event_name": "api_requests", "identifier": f"s{n}", "payload": {**PAYLOAD, "value": v}}
        for n, v in enumerate(ODD_VALUES)
    ]
    _send(sandbox_server, events)
    assert sandbox_server.admin.meter_events() == []
    assert _reported_codes(sandbox_server) == {"meter_event_invalid_value": len(ODD_VALUES)}
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    with pytest.raises(stripe.InvalidRequestError) as refused:
        _send(
            sandbox_server,
            [{**events[0], "payload": PAYLOAD, "timestamp": moment.translate(FULLWIDTH)}],
        )
    assert refused.value.http_status == 400


def test_connector_refuses_unicode_digits_as_format_problems(
    sandbox_server: SandboxServer, bucket: Put
) -> None:
    sandbox_server.admin.create_meter("api_requests")
    now = int(time.time())
    lines = ["identifier,timestamp,event_name,payload_stripe_customer_id,payload_value"]
    lines += [f"v{n},{now},api_requests,cus_1,{value}" for n, value in enumerate(ODD_VALUES)]
    lines.append(f"t0,{str(now).translate(ARABIC_INDIC)},api_requests,cus_1,5")
    lines.append(f"t1,{str(now).translate(FULLWIDTH)},api_requests,cus_1,5")
    lines.append(f"ok,{now},api_requests,cus_1,5")
    bucket("usage.csv", ("\n".join(lines) + "\n").encode())
    (event,) = sandbox_server.admin.connector_poll()
    result = event["data"]["object"]["result"]
    assert result["successes"]["row_count"] == 1
    headers = {"Authorization": f"Bearer {sandbox_server.api_key}"}
    url = f"{sandbox_server.url}/v1/files/{result['errors']['file']}/contents"
    failed = list(csv.DictReader(io.StringIO(requests.get(url, headers=headers, timeout=5).text)))
    codes = [(row["identifier"], row["error_code"]) for row in failed]
    invalid = [(f"v{n}", "meter_event_invalid_value") for n in range(len(ODD_VALUES))]
    assert codes == [*invalid, ("t0", ""), ("t1", "")]
    assert [e["identifier"] for e in sandbox_server.admin.meter_events()] == ["ok"]


def _form(payload: dict[str, str]) -> dict[str, str]:
    return {f"payload[{key}]": value for key, value in payload.items()}
