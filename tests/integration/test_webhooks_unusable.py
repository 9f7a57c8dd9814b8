"""Webhook -> worker: a well-formed, well-signed event whose data cannot be used is stored (200),
then dead-lettered on its first attempt with the handler's reason, never retried."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from service.config import Settings
from service.db import make_engine
from service.models.inbox import InboxStatus
from service.worker.loop import InboxWorker
from tests.integration.intake_helpers import API_KEY, SECRET, inbox_rows, load_event, post_signed
from tests.servers import serve_wsgi


@pytest.fixture
def service(
    db_url: str, make_settings: Any, make_app: Any
) -> Iterator[tuple[str, Settings, Engine]]:
    settings = make_settings(
        database_url=db_url, stripe_api_key=API_KEY, stripe_webhook_secrets=[SECRET]
    )
    engine = make_engine(db_url)
    with serve_wsgi(make_app(settings)) as server:
        yield server.url, settings, engine
    engine.dispose()


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("snapshot_import_set_succeeded", "impset_1", "data is a string, not an object"),
        (
            "snapshot_import_set_failed",
            {"object": ["impset_1"]},
            "data.object is a list, not an object",
        ),
        ("snapshot_import_set_failed", {"object": {"status": "failed"}}, "data.object has no id"),
        (
            "snapshot_import_set_succeeded",
            {"object": {"id": "impset_1", "result": {"errors": {"file": "../v1/charges"}}}},
            "data.object.result.errors.file '../v1/charges' is not a Stripe file id",
        ),
    ],
)
def test_unusable_snapshot_is_dead_lettered_at_once(
    service: tuple[str, Settings, Engine], name: str, data: Any, reason: str
) -> None:
    url, settings, engine = service
    event = load_event(name, data=data)
    response = post_signed(url, event)
    assert response.status_code == 200 and response.json()["status"] == "stored"
    report = InboxWorker(engine, settings).drain()
    expected = f"unusable event: import set event: {reason}"
    assert report.dead == [(event["id"], expected)] and report.retrying == []
    [row] = inbox_rows(settings.database_url)
    assert (row.status, row.attempts, row.last_error) == (InboxStatus.DEAD, 1, expected)
