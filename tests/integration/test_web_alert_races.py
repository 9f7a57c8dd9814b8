"""Admin actions on one alert sent at the same time, through the API on threads (SQLite and
PostgreSQL): each thread reads the alert before any changes it (a barrier holds them there, so
the race is certain), then one changes it and the others answer 409, recording nothing.
Before, the change was made whatever the status had become: a resolve and an acknowledge both
answered 200, the alert ended "acknowledged" with `resolved_at` set, and `admin_actions` held
both, each "from open"; four acknowledges recorded three."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Connection, Engine
from sqlmodel import Session, col, select

from service.config import Settings
from service.db import make_engine
from service.models import AdminAction
from service.web import actions
from tests.integration import web_seed as seed

TOKEN = "alert-races-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Site:
    app: Flask
    engine: Engine
    alert_id: int

    def at_once(self, monkeypatch: pytest.MonkeyPatch, paths: list[str]) -> list[Any]:
        """POST each of `paths` on a thread of its own, every one reading the alert before
        any of them changes it; their (status, JSON) in the order of `paths`."""
        _read_together(monkeypatch, len(paths))

        def post(path: str) -> tuple[int, Any]:
            response = self.app.test_client().post(path, headers=BEARER)
            return response.status_code, response.get_json()

        with ThreadPoolExecutor(len(paths)) as pool:
            return list(pool.map(post, paths))

    def recorded(self) -> list[tuple[str, dict[str, Any]]]:
        with Session(self.engine) as session:
            rows = session.exec(select(AdminAction).order_by(col(AdminAction.id))).all()
            return [(row.action, row.detail) for row in rows]


def _read_together(monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    """Each thread's first read of the alert waits for the other threads' first reads."""
    barrier = threading.Barrier(threads, timeout=30)
    seen = threading.local()
    read = actions.get_alert

    def get_alert(connection: Connection, alert_id: int) -> dict[str, Any] | None:
        found = read(connection, alert_id)
        if not getattr(seen, "read", False):
            seen.read = True
            barrier.wait()
        return found

    monkeypatch.setattr(actions, "get_alert", get_alert)


@pytest.fixture
def site(
    db_url: str, admin_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> Iterator[Site]:
    settings = admin_settings(TOKEN)
    engine = make_engine(db_url)
    alert_id = seed.alert(engine, "race")
    yield Site(make_app(settings), engine, alert_id)
    engine.dispose()


def test_a_resolve_and_an_acknowledge_at_once_change_the_alert_once(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [f"/api/alerts/{site.alert_id}/{action}" for action in ("resolve", "acknowledge")]
    answers = site.at_once(monkeypatch, paths)
    [(won, alert)] = [
        (path, body) for path, (code, body) in zip(paths, answers, strict=True) if code == 200
    ]
    [(lost, refusal)] = [
        (path, body) for path, (code, body) in zip(paths, answers, strict=True) if code == 409
    ]
    became = "resolved" if won.endswith("resolve") else "acknowledged"
    assert alert["status"] == became
    assert (alert["resolved_at"] is None) == (became == "acknowledged")
    assert (alert["acknowledged_at"] is None) == (became == "resolved")
    action = lost.rsplit("/", 1)[1]
    assert refusal == {"error": f"alert {site.alert_id} is {became}: cannot {action}"}
    assert site.recorded() == [(won.rsplit("/", 1)[1], {"from": "open"})]
    shown = site.app.test_client().get("/api/alerts", headers=BEARER).get_json()["data"]
    assert [(a["status"], len(a["actions"])) for a in shown] == [(became, 1)]


def test_four_acknowledges_at_once_acknowledge_it_once(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = f"/api/alerts/{site.alert_id}/acknowledge"
    answers = site.at_once(monkeypatch, [path] * 4)
    assert sorted(code for code, _ in answers) == [200, 409, 409, 409]
    reason = f"alert {site.alert_id} is acknowledged: cannot acknowledge"
    assert [body for code, body in answers if code == 409] == [{"error": reason}] * 3
    assert site.recorded() == [("acknowledge", {"from": "open"})]
