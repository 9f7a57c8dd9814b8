"""POST /webhooks over a real socket: signed bodies in, inbox rows (SQLite and PostgreSQL) out."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from service.models.inbox import InboxStatus
from tests.integration.intake_helpers import (
    API_KEY,
    OTHER_SECRET,
    SECRET,
    inbox_rows,
    load_event,
    now,
    post_raw,
    post_signed,
    sign,
)
from tests.servers import serve_wsgi

Serve = Callable[..., str]


@pytest.fixture
def serve(db_url: str, make_settings: Any, make_app: Any) -> Iterator[Serve]:
    """Start the service app on a loopback port; returns its base URL."""
    stack: list[Any] = []

    def start(**overrides: Any) -> str:
        values = {
            "database_url": db_url,
            "stripe_api_key": API_KEY,
            "stripe_webhook_secrets": [SECRET],
            **overrides,
        }
        server = serve_wsgi(make_app(make_settings(**values)))
        stack.append(server)
        return server.__enter__().url

    yield start
    for server in reversed(stack):
        server.__exit__(None, None, None)


@pytest.fixture
def url(serve: Serve) -> str:
    return serve()


def test_thin_event_is_stored_before_200(url: str, db_url: str) -> None:
    event = load_event("thin_error_report_triggered")
    body = json.dumps(event)
    response = post_raw(url, body, sign(body))
    assert response.status_code == 200
    assert response.json() == {"status": "stored", "id": event["id"]}
    [row] = inbox_rows(db_url)
    assert (row.event_id, row.event_type, row.style) == (event["id"], event["type"], "thin")
    assert row.status == InboxStatus.PENDING and row.attempts == 0
    assert row.body == body and row.livemode is False and row.next_attempt_at is not None


def test_snapshot_event_is_stored(url: str, db_url: str) -> None:
    event = load_event("snapshot_import_set_succeeded", livemode=True)
    assert post_signed(url, event).status_code == 200
    [row] = inbox_rows(db_url)
    assert (row.style, row.livemode, row.status) == ("snapshot", True, InboxStatus.PENDING)


def test_rotated_secret_header_with_two_signatures(url: str, db_url: str) -> None:
    body = json.dumps(load_event("thin_no_meter_found"))
    t = now()
    old = sign(body, OTHER_SECRET, t)
    new = sign(body, SECRET, t).split(",")[1]
    assert post_raw(url, body, f"{old},{new}").status_code == 200
    assert len(inbox_rows(db_url)) == 1


def test_any_of_several_configured_secrets(serve: Serve, db_url: str) -> None:
    url = serve(stripe_webhook_secrets=[SECRET, OTHER_SECRET])
    assert post_signed(url, load_event("thin_no_meter_found"), OTHER_SECRET).status_code == 200
    assert post_signed(url, load_event("snapshot_import_set_failed"), SECRET).status_code == 200
    snapshot = load_event("snapshot_import_set_succeeded")  # the second secret, snapshot style
    assert post_signed(url, snapshot, OTHER_SECRET).status_code == 200
    rows = inbox_rows(db_url)
    assert [row.style for row in rows] == ["thin", "snapshot", "snapshot"]
    assert rows[2].event_id == snapshot["id"]


def _rejected(response: requests.Response, db_url: str, status: int = 400) -> str:
    assert response.status_code == status
    assert inbox_rows(db_url) == []
    reason: str = response.json()["error"]
    return reason


def test_wrong_secret(url: str, db_url: str) -> None:
    response = post_signed(url, load_event("thin_no_meter_found"), "whsec_wrong")
    assert "no signature matches" in _rejected(response, db_url)


@pytest.mark.parametrize("skew", [-330, 330])
def test_stale_and_future_timestamps(url: str, db_url: str, skew: int) -> None:
    """Past the 300 s tolerance either way. Not 301: a whole-second timestamp signed 301 s
    ahead is 300.x s ahead a fraction of a second later (seen failing on a busy machine)."""
    body = json.dumps(load_event("thin_no_meter_found"))
    response = post_raw(url, body, sign(body, SECRET, now() + skew))
    assert "tolerance" in _rejected(response, db_url)


def test_timestamp_within_tolerance_is_accepted(url: str, db_url: str) -> None:
    body = json.dumps(load_event("thin_no_meter_found"))
    assert post_raw(url, body, sign(body, SECRET, now() + 200)).status_code == 200


def _header_cases() -> list[tuple[str | None, str]]:
    body = json.dumps(load_event("thin_no_meter_found"))
    good = sign(body)
    t, v1 = good.split(",")
    return [
        (None, "missing"),
        ("", "missing"),
        ("garbage", "malformed"),
        (f"t=abc,{v1}", "malformed"),
        (f"{t}, {v1}", "malformed"),  # a space after the comma
        (v1, "malformed"),  # no timestamp
        (f"{t},v0={v1[3:]}", "no v1"),
    ]


# ids fixed: the headers hold a signing time, and collection (by each xdist worker) must
# give every test the same name
HEADER_IDS = ["none", "empty", "garbage", "t-not-a-number", "space-after-comma", "no-t", "v0"]


@pytest.mark.parametrize(("header", "expected"), _header_cases(), ids=HEADER_IDS)
def test_bad_headers(url: str, db_url: str, header: str | None, expected: str) -> None:
    body = json.dumps(load_event("thin_no_meter_found"))
    assert expected in _rejected(post_raw(url, body, header), db_url)


def test_invalid_json(url: str, db_url: str) -> None:
    body = '{"id": "evt_1", "object": "event",'
    assert _rejected(post_raw(url, body, sign(body)), db_url) == "invalid JSON"


def test_unknown_object(url: str, db_url: str) -> None:
    response = post_signed(url, load_event("snapshot_import_set_failed", object="v1.thing"))
    assert "unknown object" in _rejected(response, db_url)


@pytest.mark.parametrize(
    ("name", "drop", "expected"),
    [
        ("thin_no_meter_found", "created", "missing created"),  # EventNotification needs it
        ("thin_no_meter_found", "id", "missing id"),
        ("snapshot_import_set_failed", "data", "missing data"),
        ("snapshot_import_set_failed", "type", "missing type"),
    ],
)
def test_signed_event_missing_required_keys(
    url: str, db_url: str, name: str, drop: str, expected: str
) -> None:
    event = load_event(name)
    del event[drop]
    assert expected in _rejected(post_signed(url, event), db_url)


def test_unhashable_object_field(url: str, db_url: str) -> None:
    response = post_signed(url, load_event("thin_no_meter_found", object=["v2.core.event"]))
    assert "unknown object" in _rejected(response, db_url)


@pytest.mark.parametrize(
    ("name", "changes", "expected"),
    [
        ("thin_no_meter_found", {"type": ["v1.billing.meter.no_meter_found"]}, "bad type"),
        ("thin_no_meter_found", {"type": ""}, "bad type"),
        ("thin_no_meter_found", {"id": "evt_" + "x" * 300}, "bad id"),
        ("thin_no_meter_found", {"id": 42}, "bad id"),
        ("thin_no_meter_found", {"object": None}, "unknown object"),
        ("snapshot_import_set_failed", {"type": 7}, "bad type"),
        ("snapshot_import_set_failed", {"id": ""}, "bad id"),
    ],
)
def test_signed_event_with_unusable_fields(
    url: str, db_url: str, name: str, changes: dict[str, Any], expected: str
) -> None:
    """The SDK refuses some of these and accepts others; every one answers 400 with a reason."""
    assert expected in _rejected(post_signed(url, load_event(name, **changes)), db_url)


@pytest.mark.parametrize("body", ["[1, 2]", '"event"', "null"])
def test_signed_json_that_is_not_an_object(url: str, db_url: str, body: str) -> None:
    assert _rejected(post_raw(url, body, sign(body)), db_url) == "invalid JSON: not an object"


def test_tampered_body(url: str, db_url: str) -> None:
    body = json.dumps(load_event("thin_no_meter_found"))
    header = sign(body)
    tampered = body.replace("false", "true", 1)
    assert "no signature matches" in _rejected(post_raw(url, tampered, header), db_url)


def test_oversized_body_is_413(serve: Serve, db_url: str) -> None:
    url = serve(mfx_max_body_bytes=2048)
    event = load_event("snapshot_import_set_failed", padding="x" * 4000)
    assert _rejected(post_signed(url, event), db_url, 413) == "body too large: over 2048 bytes"


def test_body_at_the_limit_is_accepted(serve: Serve, db_url: str) -> None:
    event = load_event("thin_no_meter_found")
    body = json.dumps(event)
    url = serve(mfx_max_body_bytes=len(body.encode()))
    assert post_raw(url, body, sign(body)).status_code == 200
    assert [row.event_id for row in inbox_rows(db_url)] == [event["id"]]


def test_oversized_chunked_body_is_413(serve: Serve, db_url: str) -> None:
    url = serve(mfx_max_body_bytes=2048)
    body = json.dumps(load_event("snapshot_import_set_failed", padding="x" * 4000)).encode()
    chunks = iter([body[:1000], body[1000:]])  # no Content-Length: chunked transfer
    response = post_raw(url, chunks, sign(body.decode()))  # type: ignore[arg-type]  # requests streams it
    assert _rejected(response, db_url, 413) == "body too large: over 2048 bytes"


def test_no_secret_configured_fails_closed(serve: Serve, db_url: str) -> None:
    url = serve(stripe_webhook_secrets=[])
    response = post_signed(url, load_event("thin_no_meter_found"))
    assert _rejected(response, db_url) == "no webhook secret configured"


def test_duplicate_delivery_stores_nothing_new(url: str, db_url: str) -> None:
    event = load_event("snapshot_import_set_failed")
    assert post_signed(url, event).json()["status"] == "stored"
    again = post_signed(url, event)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert len(inbox_rows(db_url)) == 1


def test_concurrent_deliveries_store_one_row(url: str, db_url: str) -> None:
    body = json.dumps(load_event("snapshot_import_set_succeeded"))
    header = sign(body)
    barrier = threading.Barrier(5)
    results: list[str] = []

    def deliver() -> None:
        barrier.wait()
        response = post_raw(url, body, header)
        results.append(f"{response.status_code}:{response.json().get('status')}")

    threads = [threading.Thread(target=deliver) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["200:duplicate"] * 4 + ["200:stored"]
    assert len(inbox_rows(db_url)) == 1


def test_unknown_event_type_is_stored_ignored(url: str, db_url: str) -> None:
    response = post_signed(url, load_event("thin_unknown_type"))
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    [row] = inbox_rows(db_url)
    assert row.status == InboxStatus.IGNORED and row.next_attempt_at is None


def test_database_failure_is_503(serve: Serve, tmp_path: Any) -> None:
    url = serve(database_url=f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    response = post_signed(url, load_event("thin_no_meter_found"))
    assert response.status_code == 503
    assert response.json() == {"error": "database unavailable"}
