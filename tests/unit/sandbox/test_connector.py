"""The connector's split of rejected rows: format problems in the failed-records file, data
problems reported asynchronously (option `connector_data_errors`)."""

from __future__ import annotations

import csv
import io
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
    f"ms,{NOW * 1000},api,cus_1,5",  # format: timestamp_in_future
    f"txt,{NOW},api,cus_1,abc",  # format: meter_event_invalid_value
    f"nomv,{NOW},Api,cus_1,5",  # data: no_meter
    f"arch,{NOW},old,cus_1,5",  # data: archived_meter
    f"nocust,{NOW},api,,5",  # data: meter_event_no_customer_defined
    f"ghost,{NOW},api,cus_ghost,5",  # data: meter_event_customer_not_found
    f",{NOW},Api,cus_1,5",  # data, no identifier: the connector generates one
]
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


def test_default_is_file_every_rejection_in_the_failed_records_file() -> None:
    state = _state()
    assert data_errors(state) == DataErrors.FILE
    import_set = import_object(state, "u.csv", CONTENT)
    codes = _failed_codes(state, import_set)
    assert len(codes) == 7 and codes["nomv"] == "no_meter" and codes["arch"] == "archived_meter"
    assert state.pending_errors == []


def test_report_mode_splits_format_from_data_problems() -> None:
    state = _state("report")
    import_set = import_object(state, "u.csv", CONTENT)
    assert import_set["status"] == "succeeded_with_errors"
    assert _failed_codes(state, import_set) == {
        "ms": "timestamp_in_future",
        "txt": "meter_event_invalid_value",
    }
    pending = {p.identifier: p.code for p in state.pending_errors}
    generated = [i for i in pending if i not in {"nomv", "arch", "nocust", "ghost"}]
    assert len(pending) == 5 and len(generated) == 1 and generated[0]
    assert [e["identifier"] for e in state.meter_events] == ["ok"]
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
    state = _state("report")
    state.reset()
    assert data_errors(state) == DataErrors.REPORT
