"""Helpers for intake tests: sample events, signing, inbox rows."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import requests
import stripe
from sqlmodel import Session, col, select

from service.db import make_engine
from service.models.inbox import InboxEvent

EVENTS_DIR = Path(__file__).resolve().parents[1] / "data" / "events"
SECRET = "whsec_test_intake_primary"
OTHER_SECRET = "whsec_test_intake_rotated"
API_KEY = "sk_test_intake"


def load_event(name: str, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS_DIR / f"{name}.json").read_text())
    event.update(overrides)
    return event


def sign(payload: str, secret: str = SECRET, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)


def post_signed(
    base_url: str, event: dict[str, Any] | str, secret: str = SECRET, **kwargs: Any
) -> requests.Response:
    body = event if isinstance(event, str) else json.dumps(event)
    return post_raw(base_url, body, sign(body, secret), **kwargs)


def post_raw(
    base_url: str, body: str | bytes, header: str | None, **kwargs: Any
) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    return requests.post(f"{base_url}/webhooks", data=body, headers=headers, timeout=10, **kwargs)


def inbox_rows(db_url: str) -> list[InboxEvent]:
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            return list(session.exec(select(InboxEvent).order_by(col(InboxEvent.id))).all())
    finally:
        engine.dispose()


def now() -> int:
    return int(time.time())
