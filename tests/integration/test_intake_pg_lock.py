"""POST /webhooks on PostgreSQL while another session holds the inbox locked: the INSERT waits
at most `WRITE_SECONDS`, then the webhook answers 503 having stored nothing (a lock held for
75 s held the request 75 s, long after Stripe gave up on it); and a session the server ended
is replaced without an ERROR from the pool."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from sqlalchemy import Connection, create_engine, make_url, text

from service.adapters.stripe_events import VerifiedEvent
from service.db import make_engine
from service.intake.pg_writer import WRITE_SECONDS
from service.intake.store import StoreResult, store_event
from service.models.inbox import PayloadStyle
from tests.integration.intake_helpers import API_KEY, SECRET, load_event, post_signed, sign
from tests.servers import serve_wsgi


@pytest.fixture
def url(pg_url: str, make_settings: Any, make_app: Any) -> Iterator[str]:
    """The service on `pg_url`, on a loopback port."""
    settings = make_settings(
        database_url=pg_url, stripe_api_key=API_KEY, stripe_webhook_secrets=[SECRET]
    )
    with serve_wsgi(make_app(settings)) as server:
        yield server.url


@pytest.fixture
def locker(pg_url: str) -> Iterator[Connection]:
    """Another session, its transaction open (it holds what it locks until rolled back)."""
    other = create_engine(pg_url)
    with other.connect() as connection:
        yield connection
        connection.rollback()
    other.dispose()


def _stored(pg_url: str) -> list[str]:
    other = create_engine(pg_url)
    try:
        with other.connect() as connection:
            rows = connection.execute(text("SELECT event_id FROM inbox_events ORDER BY id"))
            return [row[0] for row in rows]
    finally:
        other.dispose()


def test_a_locked_inbox_answers_503_within_the_bound(
    url: str, pg_url: str, locker: Connection
) -> None:
    first, second = load_event("thin_no_meter_found"), load_event("thin_no_meter_found")
    first["id"], second["id"] = "evt_before_the_lock", "evt_while_locked"
    assert post_signed(url, first).status_code == 200
    locker.execute(text("LOCK TABLE inbox_events IN ACCESS EXCLUSIVE MODE"))
    started = time.monotonic()
    try:
        body = json.dumps(second)
        response = requests.post(
            f"{url}/webhooks",
            data=body,
            headers={"Content-Type": "application/json", "Stripe-Signature": sign(body)},
            timeout=WRITE_SECONDS + 10,  # the helper's 10 s: not much more than the bound
        )
        waited = time.monotonic() - started
    finally:
        locker.rollback()  # the lock let go
    assert response.status_code == 503
    assert response.json() == {"error": "database unavailable"}
    assert WRITE_SECONDS - 0.5 <= waited < WRITE_SECONDS + 3  # waited once, not twice
    assert _stored(pg_url) == ["evt_before_the_lock"]  # nothing acknowledged, nothing stored
    # Stripe's next delivery, the lock gone: stored once
    retried = post_signed(url, second)
    assert retried.status_code == 200
    assert retried.json() == {"status": "stored", "id": "evt_while_locked"}
    assert _stored(pg_url) == ["evt_before_the_lock", "evt_while_locked"]


def _event(event_id: str) -> VerifiedEvent:
    body = f'{{"id": "{event_id}", "object": "v2.core.event"}}'
    return VerifiedEvent(event_id, "v1.billing.meter.no_meter_found", PayloadStyle.THIN,
                         False, body)  # fmt: skip


def test_a_session_ended_by_the_server_is_replaced_without_an_error(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"mfx_pg_lock_{uuid.uuid4().hex[:12]}"
    tagged = make_url(pg_url).update_query_dict({"application_name": name})
    engine = make_engine(tagged.render_as_string(False))
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        assert store_event(engine, _event("evt_1"), known_type=True) is StoreResult.STORED
        with admin.connect() as connection:
            ended = connection.execute(
                text(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = :name AND pid <> pg_backend_pid()) AS ended"
                ),
                {"name": name},
            ).scalar_one()
        assert ended == 1
        with caplog.at_level(logging.WARNING):
            assert store_event(engine, _event("evt_2"), known_type=True) is StoreResult.STORED
    finally:
        admin.dispose()
        engine.dispose()
    assert [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert _stored(pg_url) == ["evt_1", "evt_2"]


def test_webhooks_queued_behind_a_locked_insert_answer_within_the_bound(
    url: str, pg_url: str, locker: Connection
) -> None:
    """The process's webhooks take turns on its one writer connection: with the inbox locked,
    four at once answered 503 after 5, 10, 15 and 20 s (the 16 of a gthread worker's threads,
    up to 80 s: long after Stripe gave up). Each waits at most `WRITE_SECONDS` for its turn,
    then as long for its INSERT: none waits more than twice the bound."""
    events = [load_event("thin_no_meter_found") for _ in range(4)]
    for number, event in enumerate(events):
        event["id"] = f"evt_queued_{number}"
    locker.execute(text("LOCK TABLE inbox_events IN ACCESS EXCLUSIVE MODE"))

    def post(event: dict[str, Any]) -> tuple[int, float]:
        body = json.dumps(event)
        started = time.monotonic()
        response = requests.post(
            f"{url}/webhooks",
            data=body,
            headers={"Content-Type": "application/json", "Stripe-Signature": sign(body)},
            timeout=4 * WRITE_SECONDS + 10,
        )
        return response.status_code, time.monotonic() - started

    try:
        with ThreadPoolExecutor(len(events)) as pool:
            answers = list(pool.map(post, events))
    finally:
        locker.rollback()
    assert [status for status, _ in answers] == [503] * 4, answers
    assert max(waited for _, waited in answers) < 2 * WRITE_SECONDS + 3, answers
    assert _stored(pg_url) == []
    assert [post_signed(url, event).status_code for event in events] == [200] * 4
    assert _stored(pg_url) == [event["id"] for event in events]
