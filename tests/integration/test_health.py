"""Liveness, readiness and metrics over a real socket."""

from __future__ import annotations

from collections.abc import Callable

import requests
from flask import Flask
from sqlmodel import Session

from service.config import Settings
from service.db import make_engine
from service.models import InboxEvent, InboxStatus
from tests.servers import serve_wsgi


def test_healthz_readyz_and_metrics(
    db_url: str, make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> None:
    engine = make_engine(db_url)
    with Session(engine) as session:
        for n, status in enumerate([InboxStatus.DONE, InboxStatus.DONE, InboxStatus.DEAD]):
            session.add(
                InboxEvent(
                    event_id=f"evt_{n}", event_type="t", style="thin", body="{}", status=status
                )
            )
        session.commit()
    engine.dispose()
    app = make_app(make_settings(database_url=db_url))
    with serve_wsgi(app) as server:
        assert requests.get(f"{server.url}/healthz", timeout=5).json() == {"status": "ok"}
        ready = requests.get(f"{server.url}/readyz", timeout=5)
        assert ready.status_code == 200
        body = requests.get(f"{server.url}/metrics", timeout=5).text
    assert 'meterfix_inbox_events{status="done"} 2' in body
    assert 'meterfix_inbox_events{status="dead"} 1' in body
    assert 'meterfix_remediation_rows{outcome="quarantined"} 0' in body


def test_readyz_reports_unreachable_database(
    make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> None:
    app = make_app(make_settings(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none"))
    with serve_wsgi(app) as server:
        ready = requests.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
