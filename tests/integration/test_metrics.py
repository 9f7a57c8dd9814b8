"""GET /metrics over a real socket: liveness gauges and alerts by severity and status."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import requests
from flask import Flask
from sqlmodel import Session

from service.config import Settings
from service.db import make_engine
from service.models import InboxEvent, InboxStatus
from service.notify.alerts import raise_alert, resolve_alert
from service.worker.heartbeats import beat
from tests.servers import serve_wsgi


def _metrics(app: Flask) -> dict[str, float]:
    with serve_wsgi(app) as server:
        body = requests.get(f"{server.url}/metrics", timeout=5).text
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def _alert(engine: object, key: str, severity: str) -> None:
    raise_alert(engine, key=key, severity=severity, kind="t", subject=key, message=key)  # type: ignore[arg-type]


def test_liveness_gauges_and_alerts(
    db_url: str, make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> None:
    engine = make_engine(db_url)
    now = datetime.now(UTC)
    beat(engine, "w:1:a", "worker", now=now - timedelta(seconds=40))
    beat(engine, "w:2:b", "worker", now=now - timedelta(seconds=4))
    beat(engine, "p:1:c", "poller", now=now - timedelta(seconds=400))
    with Session(engine) as session:
        for n, (status, age) in enumerate(
            [(InboxStatus.PENDING, 30), (InboxStatus.PROCESSING, 90), (InboxStatus.DONE, 999)]
        ):
            session.add(
                InboxEvent(
                    event_id=f"evt_{n}", event_type="t", style="thin", body="{}", status=status,
                    received_at=now - timedelta(seconds=age),
                )
            )  # fmt: skip
        session.commit()
    _alert(engine, "a", "critical")
    _alert(engine, "b", "critical")
    _alert(engine, "c", "warning")
    resolve_alert(engine, "b")
    engine.dispose()
    samples = _metrics(make_app(make_settings(database_url=db_url)))
    assert 3 <= samples["meterfix_worker_heartbeat_age_seconds"] < 30  # the newest worker
    assert 399 <= samples["meterfix_poller_heartbeat_age_seconds"] < 430
    assert samples["meterfix_backlog_items"] == 2
    assert 89 <= samples["meterfix_oldest_pending_age_seconds"] < 120
    alerts = {k: v for k, v in samples.items() if k.startswith("meterfix_alerts{")}
    assert len(alerts) == 9  # every severity x status, zeros included
    assert alerts['meterfix_alerts{severity="critical",status="open"}'] == 1
    assert alerts['meterfix_alerts{severity="critical",status="resolved"}'] == 1
    assert alerts['meterfix_alerts{severity="warning",status="open"}'] == 1
    assert alerts['meterfix_alerts{severity="info",status="acknowledged"}'] == 0


def test_never_beaten_is_infinitely_old(
    db_url: str, make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> None:
    app = make_app(make_settings(database_url=db_url))
    with serve_wsgi(app) as server:
        body = requests.get(f"{server.url}/metrics", timeout=5).text
        ready = requests.get(f"{server.url}/readyz", timeout=5)
    assert re.search(r"^meterfix_worker_heartbeat_age_seconds \+Inf$", body, re.M)
    assert re.search(r"^meterfix_poller_heartbeat_age_seconds \+Inf$", body, re.M)
    assert re.search(r"^meterfix_backlog_items 0$", body, re.M)
    assert re.search(r"^meterfix_oldest_pending_age_seconds 0$", body, re.M)
    assert ready.status_code == 200  # no heartbeat at all: still ready (the database is)
