"""POST /webhooks under hostile input: every answer is JSON, never a 5xx, nothing stored
unless the body is a well-signed, well-formed event (docs/architecture.md, the flow of an
event)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from service.adapters.stripe_events import WebhookVerifier
from service.models.inbox import InboxStatus
from tests.integration.intake_helpers import (
    API_KEY,
    SECRET,
    inbox_rows,
    load_event,
    now,
    post_raw,
    post_signed,
    sign,
)
from tests.servers import serve_wsgi


@pytest.fixture
def url(db_url: str, make_settings: Any, make_app: Any) -> Iterator[str]:
    settings = make_settings(
        database_url=db_url, stripe_api_key=API_KEY, stripe_webhook_secrets=[SECRET]
    )
    with serve_wsgi(make_app(settings)) as server:
        yield server.url


def _rejected(response: requests.Response, db_url: str, status: int = 400) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert inbox_rows(db_url) == []
    reason: str = response.json()["error"]
    return reason


def _nested(depth: int) -> dict[str, Any]:
    """A snapshot event whose JSON nests `depth` levels in all (the event itself is one)."""
    inner: Any = 1
    for _ in range(depth - 3):  # the event, `data` and `data.object` are three levels
        inner = [inner]
    return load_event("snapshot_import_set_failed", data={"object": {"id": "impset_1", "x": inner}})


# -- unsigned requests with hostile Stripe-Signature headers ----------------------------------


@pytest.mark.parametrize(
    "timestamp",
    [
        "9" * 5000,  # int() refuses more than 4,300 digits
        "1" * 13,  # no unix time in seconds has 13 digits (that would be milliseconds)
        "17²",  # str.isdigit() accepts superscripts, int() does not
        "1764²³¹¹¹¹",
    ],
)
def test_hostile_timestamp_is_a_json_400(url: str, db_url: str, timestamp: str) -> None:
    body = json.dumps(load_event("thin_no_meter_found"))
    header = f"t={timestamp},v1={'0' * 64}".encode("latin-1")  # as HTTP carries header bytes
    reason = _rejected(post_raw(url, body, header), db_url)  # type: ignore[arg-type]
    assert reason.startswith("malformed Stripe-Signature header")


def test_non_ascii_signature_is_a_json_400(url: str, db_url: str) -> None:
    """hmac.compare_digest raises TypeError on non-ASCII text: refused before it gets there."""
    body = json.dumps(load_event("thin_no_meter_found"))
    header = f"t={now()},v1=é{'0' * 63}".encode("latin-1")
    reason = _rejected(post_raw(url, body, header), db_url)  # type: ignore[arg-type]
    assert reason == "malformed Stripe-Signature header: not ASCII"


# -- signed bodies that are not well-formed events ---------------------------------------------


@pytest.mark.parametrize(
    ("event_id", "expected"),
    [
        ("evt_1\u0000x", "bad id (control or unprintable characters)"),  # PostgreSQL refuses NUL
        ("evt_1\nx", "bad id (control or unprintable characters)"),
        ("evt_\u001b[31m", "bad id (control or unprintable characters)"),
        ("evt_\ud800", "bad id (control or unprintable characters)"),  # a lone surrogate
        ("evt_\u2028", "bad id (control or unprintable characters)"),
    ],
)
@pytest.mark.parametrize("name", ["thin_no_meter_found", "snapshot_import_set_failed"])
def test_signed_id_with_control_characters_is_refused(
    url: str, db_url: str, name: str, event_id: str, expected: str
) -> None:
    response = post_signed(url, load_event(name, id=event_id))
    assert _rejected(response, db_url) == f"malformed event: {expected}"


def test_signed_type_with_nul_is_refused(url: str, db_url: str) -> None:
    event = load_event("snapshot_import_set_failed", type="data_management.import_set.failed\0")
    reason = _rejected(post_signed(url, event), db_url)
    assert reason == "malformed event: bad type (control or unprintable characters)"


def test_nesting_at_the_bound_is_stored(url: str, db_url: str) -> None:
    event = _nested(32)
    response = post_signed(url, event)
    assert response.status_code == 200, response.text
    assert [row.event_id for row in inbox_rows(db_url)] == [event["id"]]


def test_nesting_beyond_the_bound_is_refused(url: str, db_url: str) -> None:
    reason = _rejected(post_signed(url, _nested(33)), db_url)
    assert reason == "malformed event: nested deeper than 32 levels"


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_signed_body_is_a_400(url: str, db_url: str, depth: int) -> None:
    """The JSON decoder recursed into these and raised RecursionError (a 500)."""
    body = '{"id": "evt_deep", "object": "event", "data": ' + "[" * depth + "]" * depth + "}"
    reason = _rejected(post_raw(url, body, sign(body)), db_url)
    assert reason == "malformed event: nested deeper than 32 levels"


def test_unterminated_nesting_signed_is_a_400(url: str, db_url: str) -> None:
    body = "[" * 100_000  # opened 100,000 levels deep before it ends
    reason = _rejected(post_raw(url, body, sign(body)), db_url)
    assert reason == "malformed event: nested deeper than 32 levels"


def test_deeply_nested_unsigned_body_is_a_400(url: str, db_url: str) -> None:
    body = "[" * 100_000 + "]" * 100_000
    reason = _rejected(post_raw(url, body, f"t={now()},v1={'0' * 64}"), db_url)
    assert reason == "no signature matches a configured secret"


def test_brackets_inside_strings_do_not_count(url: str, db_url: str) -> None:
    message = "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[ {{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{"
    event = load_event("snapshot_import_set_failed")
    event["data"]["object"]["failed_reason"] = message
    assert post_signed(url, event).status_code == 200
    assert len(inbox_rows(db_url)) == 1


def test_signed_body_not_utf8_is_a_400(url: str, db_url: str) -> None:
    body = b'{"id": "evt_\xff", "object": "event"}'
    header = sign(body.decode("latin-1"))  # signed as the sender's bytes would be
    reason = _rejected(post_raw(url, body, header), db_url)
    assert reason in ("invalid JSON", "no signature matches a configured secret")


# -- well-formed events whose data the worker cannot use: stored, the handler decides ---------


@pytest.mark.parametrize(
    "data", ["a string", {"object": {"status": "failed"}}, {"object": "impset_1"}, 5]
)
def test_signed_snapshot_with_unusable_data_is_stored(url: str, db_url: str, data: Any) -> None:
    event = load_event("snapshot_import_set_failed", data=data)
    response = post_signed(url, event)
    assert response.status_code == 200
    assert response.json() == {"status": "stored", "id": event["id"]}
    [row] = inbox_rows(db_url)
    assert row.status == InboxStatus.PENDING and json.loads(row.body)["data"] == data


# -- other methods and paths under /webhooks, and the last line of defence ---------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"])
def test_other_methods_are_a_json_405(url: str, db_url: str, method: str) -> None:
    response = requests.request(method, f"{url}/webhooks", timeout=10)
    assert response.headers["Allow"] == "POST"
    assert _rejected(response, db_url, 405) == "method not allowed: POST only"


@pytest.mark.parametrize("path", ["/webhooks/", "/webhooks/evt_1", "/webhooks/a/b"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_paths_below_webhooks_are_a_json_404(url: str, db_url: str, path: str, method: str) -> None:
    response = requests.request(method, f"{url}{path}", data="{}", timeout=10)
    assert _rejected(response, db_url, 404) == "not found: events are posted to /webhooks"


def test_head_answers_405_without_a_body(url: str) -> None:
    response = requests.head(f"{url}/webhooks", timeout=10)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert response.headers["Content-Type"] == "application/json"


def test_a_bug_answers_json_500(
    url: str, db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(WebhookVerifier, "verify", broken)
    response = post_signed(url, load_event("thin_no_meter_found"))
    assert _rejected(response, db_url, 500) == "internal error"
    assert "webhook.error" in caplog.text and "RuntimeError" in caplog.text


def _raw(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request written byte for byte (requests cannot send broken framing)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        received = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status.split()[1]), headers, body


@pytest.mark.parametrize(
    "chunks",
    [b"zz\r\n{}\r\n0\r\n\r\n", b"5\r\n{}"],  # a chunk size that is no number; a body cut short
)
def test_broken_chunked_body_is_a_json_400(url: str, db_url: str, chunks: bytes) -> None:
    head = b"POST /webhooks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    signature = f"Stripe-Signature: t={now()},v1={'0' * 64}\r\nConnection: close\r\n\r\n"
    status, headers, body = _raw(url, head + signature.encode() + chunks)
    assert (status, headers["Content-Type"]) == (400, "application/json")
    assert json.loads(body) == {"error": "unreadable body: OSError"}
    assert inbox_rows(db_url) == []


def test_a_signed_body_with_an_unterminated_string_is_refused_in_linear_time(
    url: str, db_url: str
) -> None:
    """docs/architecture.md (reliability contract): no input produces a hang. A signed body
    with more than 32 brackets had its strings cut out by a pattern retried from every escaped quote
    of a string left open: 60 KB took 10-13 s, a body at the 1 MiB limit most of an hour."""
    head = '{"id": "evt_slow", "object": "event", "type": "x", "data": '
    body = head + "[" * 40 + '"' + '\\"' * 30_000
    started = time.monotonic()
    reason = _rejected(post_raw(url, body, sign(body)), db_url)
    elapsed = time.monotonic() - started
    assert reason == "malformed event: nested deeper than 32 levels"  # 40 levels opened
    assert elapsed < 2.0, f"a 60 KB signed body took {elapsed:.1f} s to refuse"


def test_a_second_t_in_the_signature_header_is_refused(url: str, db_url: str) -> None:
    """README: `STRIPE_WEBHOOK_TOLERANCE` is "seconds a signature may be old **or** ahead";
    a stale one is a 400, nothing stored. The SDK verifies the signature over the header's
    first `t=`, the window was checked on the last: a delivery signed an hour ahead, with a
    current `t=` appended, was stored."""
    body = json.dumps(load_event("thin_no_meter_found", id="evt_two_t"))
    ahead = now() + 3600
    signed = sign(body, timestamp=ahead)  # t=<ahead>,v1=<signature over it>
    t_part, v1_part = signed.split(",", 1)
    header = f"{t_part},t={now()},{v1_part}"
    reason = _rejected(post_raw(url, body, header), db_url)
    assert reason == "malformed Stripe-Signature header: more than one t="
