"""The connector's split of rejected rows, as Stripe's S3 guide routes them: format problems
(a mandatory field without a value, a field of the wrong type) in the failed-records file,
data problems (values Stripe's validation rejects) reported asynchronously as thin events."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest

from sandbox.connector import DataErrors, data_errors, import_object, set_data_errors
from sandbox.objects import build_customer, build_meter
from sandbox.reports import SAMPLES_PER_CODE, build_reports
from sandbox.state import SandboxState

NOW = int(time.time())
HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
ROWS = [
    f"ok,{NOW},api,cus_1,5",
    f"ms,{NOW * 1000},api,cus_1,5",  # data: timestamp_in_future
    f"old,{NOW - 40 * 86400},api,cus_1,5",  # data: timestamp_too_far_in_past
    f"txt,{NOW},api,cus_1,abc",  # format: meter_event_invalid_value
    f"nomv,{NOW},Api,cus_1,5",  # data: no_meter
    f"arch,{NOW},old,cus_1,5",  # data: archived_meter
    f"nocust,{NOW},api,,5",  # format: meter_event_no_customer_defined
    f"noname,{NOW},,cus_1,5",  # format: event_name without a value
    f"novalue,{NOW},api,cus_1,",  # format: meter_event_value_not_found
    "iso,2026-11-30T10:00:00Z,api,cus_1,5",  # format: not integer seconds (no code)
    f"ghost,{NOW},api,cus_ghost,5",  # data: meter_event_customer_not_found
    f",{NOW},Api,cus_1,5",  # data, no identifier: the connector generates one
]
FORMAT = {
    "txt": "meter_event_invalid_value",
    "nocust": "meter_event_no_customer_defined",
    "noname": "no_meter",
    "novalue": "meter_event_value_not_found",
    "iso": "",
}
DATA = {
    "ms": "timestamp_in_future",
    "old": "timestamp_too_far_in_past",
    "nomv": "no_meter",
    "arch": "archived_meter",
    "ghost": "meter_event_customer_not_found",
}
CONTENT = (HEADER + "\n".join(ROWS) + "\n").encode()


def _state(mode: str | None = None) -> SandboxState:
    state = SandboxState()
    for spec in ({"event_name": "api"}, {"event_name": "old", "status": "inactive"}):
        meter = build_meter(spec)
        state.meters[meter["id"]] = meter
    state.customers["cus_1"] = build_customer({"id": "cus_1"})
    if mode is not None:
        set_data_errors(state, mode)
    return state


def _failed_codes(state: SandboxState, import_set: dict[str, object]) -> dict[str, str]:
    result = import_set["result"]
    assert isinstance(result, dict)
    content = state.files[result["errors"]["file"]].content.decode()
    return {r["identifier"]: r["error_code"] for r in csv.DictReader(io.StringIO(content))}


def test_default_follows_stripe_format_in_the_file_data_reported() -> None:
    state = _state()
    assert data_errors(state) == DataErrors.REPORT
    import_set = import_object(state, "u.csv", CONTENT)
    assert import_set["status"] == "succeeded_with_errors"
    assert _failed_codes(state, import_set) == FORMAT
    assert import_set["result"]["errors"]["row_count"] == len(FORMAT)
    pending = {p.identifier: p.code for p in state.pending_errors}
    generated = [i for i in pending if i not in DATA]
    assert {i: c for i, c in pending.items() if i in DATA} == DATA
    assert len(generated) == 1 and generated[0] and pending[generated[0]] == "no_meter"
    assert [e["identifier"] for e in state.meter_events] == ["ok"]
    # rows that became meter events count as created; only the file's rows as failed
    assert import_set["result"]["successes"]["row_count"] == 1 + len(DATA) + 1
    events = build_reports(state)
    sampled = {
        s["request"]["identifier"]
        for e in events
        for t in e["data"]["reason"]["error_types"]
        for s in t["sample_errors"]
    }
    assert sampled == set(pending)
    assert {e["type"] for e in events} == {
        "v1.billing.meter.error_report_triggered",
        "v1.billing.meter.no_meter_found",
    }


def test_file_mode_puts_data_problems_in_the_file_too() -> None:
    state = _state("file")
    import_set = import_object(state, "u.csv", CONTENT)
    codes = _failed_codes(state, import_set)
    assert len(codes) == len(ROWS) - 1
    assert {i: codes[i] for i in FORMAT} == FORMAT and {i: codes[i] for i in DATA} == DATA
    assert state.pending_errors == []


def test_format_checks_use_the_meters_own_keys() -> None:
    state = _state()
    meter = build_meter(
        {
            "event_name": "tokens",
            "value_settings": {"event_payload_key": "tokens"},
            "customer_mapping": {"event_payload_key": "account", "type": "by_id"},
        }
    )
    state.meters[meter["id"]] = meter
    content = (
        "identifier,timestamp,event_name,payload_account,payload_tokens,payload_value\n"
        f"t1,{NOW},tokens,cus_1,4,\n"
        f"t2,{NOW},tokens,cus_1,,4\n"
    ).encode()
    import_set = import_object(state, "t.csv", content)
    assert _failed_codes(state, import_set) == {"t2": "meter_event_value_not_found"}
    assert [e["identifier"] for e in state.meter_events] == ["t1"]


def test_json_number_timestamps_and_values_are_format_checked() -> None:
    state = _state()
    records = [
        {"identifier": "n1", "timestamp": NOW, "event_name": "api",
         "payload": {"stripe_customer_id": "cus_1", "value": 200}},
        {"identifier": "n2", "timestamp": NOW + 0.5, "event_name": "api",
         "payload": {"stripe_customer_id": "cus_1", "value": 2}},
    ]  # fmt: skip
    import_set = import_object(state, "n.json", json.dumps(records).encode())
    assert _failed_codes(state, import_set) == {"n2": ""}
    assert [e["identifier"] for e in state.meter_events] == ["n1"]


def test_report_mode_file_free_of_data_errors_has_no_failed_records() -> None:
    state = _state("report")
    content = (HEADER + f"a,{NOW},api,cus_1,1\nb,{NOW},nope,cus_1,2\n").encode()
    import_set = import_object(state, "v.csv", content)
    assert import_set["status"] == "succeeded"
    assert import_set["result"]["errors"] == {"file": None, "row_count": 0}
    assert [p.code for p in state.pending_errors] == ["no_meter"]


def test_reports_sample_a_few_but_count_all() -> None:
    state = _state("report")
    rows = [f"n{i},{NOW},nope,cus_1,1" for i in range(SAMPLES_PER_CODE + 4)]
    import_object(state, "w.csv", (HEADER + "\n".join(rows) + "\n").encode())
    (event,) = build_reports(state)
    ((error_type,),) = [event["data"]["reason"]["error_types"]]
    assert event["data"]["reason"]["error_count"] == SAMPLES_PER_CODE + 4
    assert error_type["error_count"] == SAMPLES_PER_CODE + 4
    assert len(error_type["sample_errors"]) == SAMPLES_PER_CODE


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        set_data_errors(SandboxState(), "both")


def test_option_survives_reset() -> None:
    state = _state("file")
    state.reset()
    assert data_errors(state) == DataErrors.FILE
