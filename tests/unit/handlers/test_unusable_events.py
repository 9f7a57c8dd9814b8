"""Well-formed events whose data no handler can use raise UnusableEvent with a precise reason
(the worker dead-letters them at once, never retries them) and record nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from handlers import REGISTRY
from handlers.errors import UnusableEvent
from tests.unit.handlers.fakes import RecordingContext

EVENTS = Path(__file__).resolve().parents[2] / "data" / "events"
IMPORT_SET_EVENTS = ["snapshot_import_set_failed", "snapshot_import_set_succeeded"]


def _event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return event


def _reason(event: dict[str, Any]) -> str:
    ctx = RecordingContext()
    with pytest.raises(UnusableEvent) as raised:
        REGISTRY[event["type"]](event, ctx)
    assert (ctx.import_sets, ctx.reports, ctx.remediations) == ({}, {}, [])
    assert str(raised.value) == raised.value.reason
    return raised.value.reason


@pytest.mark.parametrize("name", IMPORT_SET_EVENTS)
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("a string", "data is a string, not an object"),
        (None, "data is missing, not an object"),
        ([{"object": {"id": "impset_1"}}], "data is a list, not an object"),
        (7, "data is a number, not an object"),
        ({}, "data.object is missing, not an object"),
        ({"object": "impset_1"}, "data.object is a string, not an object"),
        ({"object": {"status": "failed"}}, "data.object has no id"),
        ({"object": {"id": ""}}, "data.object has no id"),
        ({"object": {"id": 42}}, "data.object has no id"),
        ({"object": {"id": "impset_1\x00"}}, "data.object.id 'impset_1\\x00' is not a Stripe id"),
        ({"object": {"id": "../../x"}}, "data.object.id '../../x' is not a Stripe id"),
    ],
)
def test_import_set_event_without_an_import_set(name: str, data: Any, expected: str) -> None:
    event = _event(name)
    event["data"] = data
    assert _reason(event) == f"import set event: {expected}"


@pytest.mark.parametrize(
    ("place", "file_id", "expected"),
    [
        ("errors", "../../v1/customers", "data.object.result.errors.file '../../v1/customers'"),
        ("errors", "file_1\n", "data.object.result.errors.file 'file_1\\n'"),
        ("source", "file_1/contents?x=", "data.object.file 'file_1/contents?x='"),
    ],
)
def test_file_ids_that_are_no_ids(place: str, file_id: str, expected: str) -> None:
    """Files are downloaded by id: nothing else may reach the Files API's URL path."""
    event = _event("snapshot_import_set_succeeded")
    obj = event["data"]["object"]
    if place == "errors":
        obj["result"]["errors"]["file"] = file_id
    else:
        obj["file"] = {"id": file_id}
    assert _reason(event) == f"import set event: {expected} is not a Stripe file id"


def test_ordinary_ids_are_kept() -> None:
    event = _event("snapshot_import_set_succeeded")
    event["data"]["object"]["id"] = "impset_test-1_AbC"
    ctx = RecordingContext()
    REGISTRY[event["type"]](event, ctx)
    assert list(ctx.import_sets) == ["impset_test-1_AbC"]


@pytest.mark.parametrize("name", ["v2_error_report_triggered", "v2_no_meter_found"])
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("a string", "data is a string, not an object"),
        ([], "data is a list, not an object"),
        (None, "data is missing, not an object"),
    ],
)
def test_meter_error_event_whose_data_is_not_an_object(name: str, data: Any, expected: str) -> None:
    event = _event(name)
    event["data"] = data
    assert _reason(event) == f"meter error event: {expected}"
