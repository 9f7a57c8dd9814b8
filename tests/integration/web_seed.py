"""Rows for the dashboard and admin API tests (and the browser tests): alerts, inbox events,
runs with their inputs and outputs, quarantined rows, heartbeats, written straight to the
database as the service writes them; and the app they are read through (`served`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from flask import Flask
from sqlalchemy import Engine, insert

from service.config import Settings
from service.db import make_engine
from service.models import (
    Alert,
    BucketObject,
    Heartbeat,
    ImportSet,
    InboxEvent,
    OutputObject,
    QuarantinedRow,
    RemediationRun,
)
from tests.servers import serve_wsgi

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _insert(engine: Engine, model: Any, rows: list[dict[str, Any]]) -> list[int]:
    with engine.begin() as connection:
        return [
            int(connection.execute(insert(model).values(**row).returning(model.id)).scalar_one())
            for row in rows
        ]


def alert(engine: Engine, key: str, **values: Any) -> int:
    row: dict[str, Any] = {
        "alert_key": key,
        "severity": "critical",
        "status": "open",
        "kind": "test",
        "subject": f"subject {key}",
        "message": f"message {key}",
        "links": {},
        "detail": {},
        "count": 1,
        "rows": 0,
        "created_at": NOW,
        "last_seen_at": NOW,
    }
    row.update(values)
    return _insert(engine, Alert, [row])[0]


def event(engine: Engine, event_id: str, status: str = "done", **values: Any) -> int:
    row: dict[str, Any] = {
        "event_id": event_id,
        "event_type": "v1.billing.meter.error_report_triggered",
        "style": "thin",
        "livemode": False,
        "body": "{}",
        "status": status,
        "attempts": 8 if status == "dead" else 1,
        "received_at": NOW,
        "last_error": "StripeError: boom" if status == "dead" else None,
    }
    row.update(values)
    return _insert(engine, InboxEvent, [row])[0]


def run(engine: Engine, run_key: str, **values: Any) -> int:
    row: dict[str, Any] = {
        "run_key": run_key,
        "trigger": "import_set.succeeded",
        "source": "file_123",
        "generation": 1,
        "status": "done",
        "input_rows": 10,
        "valid": 2,
        "corrected": 5,
        "quarantined": 3,
        "by_code": {
            "timestamp_in_future": {"corrected": 5, "quarantined": 0},
            "no_meter": {"corrected": 0, "quarantined": 3},
        },
        "created_at": NOW,
        "finished_at": NOW,
    }
    row.update(values)
    return _insert(engine, RemediationRun, [row])[0]


def import_set(engine: Engine, import_set_id: str, run_key: str, **values: Any) -> int:
    row: dict[str, Any] = {
        "import_set_id": import_set_id,
        "origin": "stripe",
        "status": "succeeded",
        "source_object": "usage/2026-11-30.csv",
        "errors_file_id": "file_123",
        "errors_row_count": 10,
        "remediation_status": "done",
        "detail": {"run_key": run_key},
        "created_at": NOW,
    }
    row.update(values)
    return _insert(engine, ImportSet, [row])[0]


def output(engine: Engine, run_id: int, kind: str, key: str, rows: int = 5) -> int:
    values = {
        "run_id": run_id,
        "kind": kind,
        "key": key,
        "rows": rows,
        "sha256": "0" * 64,
        "generation": 1,
        "source": "file_123",
        "uploaded": True,
        "created_at": NOW,
    }
    return _insert(engine, OutputObject, [values])[0]


def bucket_object(engine: Engine, key: str, status: str = "imported", **values: Any) -> int:
    row: dict[str, Any] = {
        "key": key,
        "etag": "etag-1",
        "size": 100,
        "status": status,
        "rows": 5,
        "sent": 5,
        "failed": 0,
        "attempts": 1,
        "acked_batches": 1,
        "first_seen": NOW,
        "processed_at": NOW + timedelta(minutes=1),
    }
    row.update(values)
    return _insert(engine, BucketObject, [row])[0]


def quarantined(engine: Engine, run_id: int, rows: list[dict[str, Any]]) -> list[int]:
    """Rows given as {identifier, code, meter, customer, created_at?, value?, taken_again?}."""
    values = []
    for number, given in enumerate(rows, start=1):
        meter, customer = given.get("meter"), given.get("customer")
        record = {
            "identifier": given["identifier"],
            "timestamp": given.get("timestamp", 1764500000),
            "event_name": meter,
            "payload": {"stripe_customer_id": customer, "value": given.get("value", "5")},
            "mfx_code": given["code"],
            "mfx_reason": f"reason for {given['identifier']}",
        }
        values.append(
            {
                "run_id": run_id,
                "source": "file_123",
                "row_number": number,
                "identifier": given["identifier"],
                "code": given["code"],
                "reason": f"reason for {given['identifier']}",
                "meter": meter,
                "customer": customer,
                "record": record,
                "created_at": given.get("created_at", NOW),
                "taken_again": given.get("taken_again"),
            }
        )
    return _insert(engine, QuarantinedRow, values)


def heartbeat(engine: Engine, instance: str, role: str, age_seconds: float) -> int:
    beat = datetime.now(UTC) - timedelta(seconds=age_seconds)
    values = {
        "instance": instance,
        "role": role,
        "started_at": beat,
        "last_beat_at": beat,
        "detail": {},
    }
    return _insert(engine, Heartbeat, [values])[0]


@contextmanager
def served(
    db_url: str,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
    token: str,
) -> Iterator[tuple[str, Engine, requests.Session]]:
    """The app behind admin token `token` on a loopback port (no Stripe behind it): its URL,
    an engine on its database and a browser session."""
    settings = make_settings(
        database_url=db_url,
        mfx_admin_token=token,
        stripe_api_key="sk_test_x",
        stripe_webhook_secrets="whsec_x",
    )
    engine = make_engine(db_url)
    with serve_wsgi(make_app(settings)) as server, requests.Session() as browser:
        yield server.url, engine, browser
    engine.dispose()
