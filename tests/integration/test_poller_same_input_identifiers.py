"""A row the bundled poller refused is corrected under an identifier no other row of its
source object holds. The poller's failed-records file holds only the refused rows: reserved
from it alone, `q`'s derived `q-mfx1` was the identifier of the object's own row `q-mfx1`,
which the poller had sent; the next poll left the corrected row out as sent before, and its
usage was never billed (DESIGN's identifier rule: "an original identifier of the same input").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlmodel import select

from remediation.identifiers import hashed_identifier
from service.config import Settings
from service.models import QuarantinedRow
from service.poller.passes import run_poll_pass
from tests.integration.test_billing_safety import bundled_poller
from tests.integration.test_e2e import Loop, _put, render, running_loop


@pytest.fixture
def loop(
    db_url: str, s3_endpoint: str, tmp_path: Path, make_app: Callable[[Settings], Flask]
) -> Iterator[Loop]:
    with running_loop(db_url, s3_endpoint, tmp_path, make_app) as running:
        yield running


def the_two_rows() -> list[dict[str, Any]]:
    """`q` (a timestamp in milliseconds: corrected) and `q-mfx1` (valid: sent as it is)."""
    now = int(time.time()) - 300
    base = {"event_name": "api_requests", "customer": "cus_alice"}
    return [
        {**base, "identifier": "q", "timestamp": now * 1000, "value": "23"},
        {**base, "identifier": "q-mfx1", "timestamp": now - 1, "value": "24"},
    ]


def billed(loop: Loop) -> dict[str, str]:
    """identifier -> the value billed under it (each identifier billed once)."""
    events = loop.sandbox.meter_events()
    found = {str(e["identifier"]): str(e["payload"]["value"]) for e in events}
    assert len(found) == len(events)
    return found


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_corrected_row_does_not_take_the_identifier_of_a_row_the_poller_sent(
    loop: Loop, fmt: str
) -> None:
    _put(loop, f"day.{fmt}", render(the_two_rows(), fmt))
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)  # q-mfx1 sent; q refused (a timestamp in milliseconds)
        loop.drain()  # q corrected
        run_poll_pass(deps)  # the corrected file
        loop.drain()
    billed = {str(e["identifier"]): str(e["payload"]["value"]) for e in loop.sandbox.meter_events()}
    assert billed == {"q-mfx1": "24", hashed_identifier("q", 1): "23"}
    assert len(loop.sandbox.meter_events()) == 2
    with loop.session() as session:
        assert session.exec(select(QuarantinedRow)).all() == []


@pytest.fixture
def connector_loop(
    db_url: str, s3_endpoint: str, tmp_path: Path, make_app: Callable[[Settings], Flask]
) -> Iterator[Loop]:
    with running_loop(db_url, s3_endpoint, tmp_path, make_app, poller="off") as running:
        yield running


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_corrected_row_does_not_take_the_identifier_of_a_row_stripes_connector_took(
    connector_loop: Loop, fmt: str
) -> None:
    """The same through Stripe's S3 connector: its failed-records file holds `q` alone."""
    loop = connector_loop
    _put(loop, f"day.{fmt}", render(the_two_rows(), fmt))
    loop.sandbox.connector_poll()  # q-mfx1 billed; q fails (a timestamp in milliseconds)
    loop.drain()  # q corrected
    loop.sandbox.connector_poll()  # the corrected file
    assert billed(loop) == {"q-mfx1": "24", hashed_identifier("q", 1): "23"}
    with loop.session() as session:
        assert session.exec(select(QuarantinedRow)).all() == []


def test_a_json_row_without_a_payload_the_poller_refused_is_quarantined_as_written(
    loop: Loop,
) -> None:
    """The poller's failed-records file wrote a JSON row without a payload with `"payload":{}`
    added: remediation read a payload named empty, and the quarantined row (stored and in the
    quarantine file) was not the row as written."""
    now = int(time.time()) - 300
    rows = [
        {"identifier": "np", "timestamp": now, "event_name": "api_requests"},
        {
            "identifier": "ok",
            "timestamp": now,
            "event_name": "api_requests",
            "payload": {"stripe_customer_id": "cus_alice", "value": "1"},
        },
    ]
    _put(loop, "day.jsonl", "".join(json.dumps(row) + "\n" for row in rows).encode())
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)
        loop.drain()
    assert billed(loop) == {"ok": "1"}
    with loop.session() as session:
        [row] = session.exec(select(QuarantinedRow)).all()
    written = {key: value for key, value in row.record.items() if not key.startswith("mfx_")}
    assert written == {"identifier": "np", "timestamp": now, "event_name": "api_requests"}
    assert "the row has no payload" in row.reason
