"""Property-based fuzzing of the webhook intake over a real socket (SQLite and PostgreSQL).

Random bodies (bytes, JSON, event-like objects, well-formed events, deep nesting) with random
`Stripe-Signature` headers, signed right, wrong, stale or not at all. Invariants: never a
5xx, always a JSON answer, a row is stored iff the answer is 200, and a 200 only for a
correctly signed, well-formed event (judged here independently of the service's code).
`MFX_FUZZ_EXAMPLES=N` runs N examples per property instead of the bounded default.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from handlers import REGISTRY
from service.db import make_engine
from tests.fuzz import fuzz_settings
from tests.integration.intake_helpers import API_KEY, SECRET, now
from tests.servers import serve_wsgi

MAX_NESTING = 32  # the documented bound, restated: the oracle does not import the service's


@dataclass
class Intake:
    url: str
    engine: Engine

    def count(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM inbox_events")).scalar_one())

    def stored_body(self, event_id: str) -> str | None:
        query = text("SELECT body FROM inbox_events WHERE event_id = :id")
        with self.engine.connect() as connection:
            found = connection.execute(query, {"id": event_id}).scalar_one_or_none()
        return None if found is None else str(found)


@pytest.fixture
def intake(db_url: str, make_settings: Any, make_app: Any) -> Iterator[Intake]:
    settings = make_settings(
        database_url=db_url, stripe_api_key=API_KEY, stripe_webhook_secrets=[SECRET]
    )
    engine = make_engine(db_url)
    try:
        with serve_wsgi(make_app(settings)) as server:
            yield Intake(server.url, engine)
    finally:
        engine.dispose()


# -- strategies -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
stripe_ids = st.from_regex(r"evt_[A-Za-z0-9_]{1,60}", fullmatch=True)
known_types = st.sampled_from([*REGISTRY, "v1.billing.meter.unknown_thing", "charge.refunded"])


def _rfc3339(seconds: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


@st.composite
def good_events(draw: st.DrawFn) -> dict[str, Any]:
    """Events Stripe could send: both payload styles, known and unknown types."""
    event_id, event_type = draw(stripe_ids), draw(known_types)
    if draw(st.booleans()):
        return {
            "id": event_id,
            "object": "v2.core.event",
            "type": event_type,
            "created": _rfc3339(draw(st.integers(0, 4_000_000_000))),
            "livemode": draw(st.booleans()),
            "context": None,
            "related_object": {
                "id": "mtr_1",
                "type": "billing.meter",
                "url": "/v1/billing/meters/mtr_1",
            },
        }
    data = draw(json_values | st.fixed_dictionaries({"object": json_values}))
    return {"id": event_id, "object": "event", "type": event_type, "data": data, "created": 1}


event_like = st.fixed_dictionaries(
    {},
    optional={
        "id": stripe_ids | st.text(max_size=300) | json_values,
        "object": st.sampled_from(["event", "v2.core.event"]) | json_values,
        "type": known_types | st.text(max_size=40) | json_values,
        "created": st.integers() | st.text(max_size=30),
        "data": json_values,
        "livemode": json_values,
        "context": json_values,
        "related_object": json_values,
    },
)


@st.composite
def nested_events(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed snapshot whose data nests `depth` levels below the event's three."""
    inner: Any = draw(json_values)
    for _ in range(draw(st.integers(0, 60))):
        inner = [inner] if draw(st.booleans()) else {"k": inner}
    event = draw(good_events().filter(lambda e: e["object"] == "event"))
    event["data"] = {"object": {"id": "impset_1", "x": inner}}
    return event


def _encode(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A body, and whether it is a well-formed event by construction."""
    choice = draw(st.sampled_from(["bytes", "json", "event_like", "good", "nested", "deep"]))
    if choice == "bytes":
        return draw(st.binary(max_size=400)), False
    if choice == "deep":
        depth = draw(st.integers(30, 5000))
        return b'{"id": "evt_1", "data": ' + b"[" * depth + b"]" * depth + b"}", False
    value = {
        "json": json_values,
        "event_like": event_like,
        "good": good_events(),
        "nested": nested_events(),
    }[choice]
    return _encode(draw(value), draw(st.booleans())), choice == "good"


header_text = st.text(
    alphabet=st.characters(min_codepoint=1, max_codepoint=0xFF, exclude_characters="\r\n"),
    max_size=200,
).map(lambda value: value.lstrip(" \t\x0b\x0c"))  # requests refuses leading whitespace
hostile_timestamps = st.sampled_from(["9" * 5000, "17²", "-1", "", "0x10", "1e9", "³"]) | st.text(
    alphabet=string.digits, min_size=11, max_size=40
)


def _v1(body: bytes, timestamp: str, secret: str = SECRET) -> str:
    signed = timestamp.encode("latin-1") + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


@st.composite
def headers(draw: st.DrawFn, body: bytes) -> tuple[str | None, bool]:
    """A Stripe-Signature header, and whether it is a valid signature of `body` right now."""
    t = str(now())
    mode = draw(st.sampled_from(["valid", "rotated", "wrong", "stale", "none", "text", "hostile"]))
    if mode == "valid":
        return f"t={t},v1={_v1(body, t)}", True
    if mode == "rotated":
        return f"t={t},v1={_v1(body, t, 'whsec_old')},v1={_v1(body, t)},v0=abc", True
    if mode == "wrong":
        return f"t={t},v1={_v1(body, t, 'whsec_wrong')}", False
    if mode == "stale":
        old = str(now() - draw(st.sampled_from([330, 10**6, -330])))  # 301: flaky (whole seconds)
        return f"t={old},v1={_v1(body, old)}", False
    if mode == "none":
        return None, False
    if mode == "text":
        return draw(header_text), False
    timestamp = draw(hostile_timestamps)
    return f"t={timestamp},v1={_v1(body, timestamp)}", False


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[bytes, str | None, bool, bool]:
    body, well_formed = draw(bodies())
    header, signed = draw(headers(body))
    return body, header, signed, well_formed


# -- the oracle: what a well-formed event is (docs/architecture.md) ----------------------------


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _usable_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 255 and value.isprintable()


def well_formed(body: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(event, dict) or _depth(event) > MAX_NESTING:
        return None
    kind = event.get("object")
    required = {"v2.core.event": "created", "event": "data"}.get(
        kind if isinstance(kind, str) else ""
    )
    if required is None or required not in event:
        return None
    if not (_usable_id(event.get("id")) and _usable_id(event.get("type"))):
        return None
    return event


# -- properties -------------------------------------------------------------------------------


def _post(
    url: str, body: bytes, header: str | None, content_type: str, chunks: int
) -> requests.Response:
    """`chunks` > 0 sends the body with chunked transfer encoding (no Content-Length)."""
    sent = {"Content-Type": content_type}
    if header is not None:
        sent["Stripe-Signature"] = header.encode("latin-1")  # type: ignore[assignment]
    size = max(1, -(-len(body) // chunks)) if chunks else 0
    data = iter([body[i : i + size] for i in range(0, len(body), size)]) if chunks else body
    return requests.post(f"{url}/webhooks", data=data, headers=sent, timeout=30)


@fuzz_settings(40)
@given(
    delivery=deliveries(),
    content_type=st.sampled_from(["application/json", "text/plain", "", "multipart/form-data"]),
    chunks=st.sampled_from([0, 0, 1, 3]),
)
def test_intake_never_fails_and_stores_only_well_formed_events(
    intake: Intake, delivery: tuple[bytes, str | None, bool, bool], content_type: str, chunks: int
) -> None:
    body, header, signed, expect_ok = delivery
    before = intake.count()
    response = _post(intake.url, body, header, content_type, chunks)
    assert response.status_code < 500, response.text
    assert response.headers["Content-Type"] == "application/json"
    answer = response.json()
    added = intake.count() - before
    if response.status_code != 200:
        assert set(answer) == {"error"} and answer["error"], answer
        assert added == 0
        assert not (expect_ok and signed), answer  # a well-formed, well-signed event is taken
        return
    event = well_formed(body)
    assert signed and event is not None, (body, header)
    assert answer["id"] == event["id"]
    stored = intake.stored_body(event["id"])
    if answer["status"] == "duplicate":  # ids repeat across examples: the first one is kept
        assert added == 0 and stored is not None
    else:
        assert answer["status"] in ("stored", "ignored")
        assert added == 1 and stored == body.decode("utf-8")


@fuzz_settings(20)
@given(
    method=st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "POST", "MKCOL"]),
    suffix=st.text(
        alphabet=string.ascii_letters + string.digits + "-_/%", max_size=30
    ),  # no dots: urllib3 resolves ".."
)
@example(method="GET", suffix="0%0A")  # a line break below /webhooks/: the app's HTML 404
@example(method="POST", suffix="a%0Ab%0D%0A/c")
def test_other_requests_under_webhooks_answer_json(
    intake: Intake, method: str, suffix: str
) -> None:
    path = "/webhooks" + ("/" + suffix if suffix or method == "POST" else "")
    response = requests.request(method, intake.url + path, data=b"{}", timeout=30)
    assert response.status_code in (404, 405), (method, path)
    assert response.headers["Content-Type"] == "application/json"
    assert set(response.json()) == {"error"}
    assert intake.count() == 0
