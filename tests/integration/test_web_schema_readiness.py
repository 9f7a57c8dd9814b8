"""The web app on a database never migrated, or one revision behind, over a real socket
(SQLite, and PostgreSQL when MFX_TEST_DATABASE_URL is set): /readyz answered 200 while every
webhook, API call and /metrics answered 503 "database unavailable", and the log said only
`OperationalError`; a load balancer sent traffic to an instance that refused it all."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import event, text

from service.config import Settings
from service.db import make_engine
from service.db.migrate import MIGRATIONS_DIR, upgrade
from service.logs import EventLine
from tests.conftest import DB_PARAMS
from tests.integration.intake_helpers import load_event, post_signed
from tests.servers import serve_wsgi
from tests.unit.test_migrations import _empty_database

TOKEN = "schema-readiness-token"
SECRET = "whsec_schema_readiness"
NOT_MIGRATED = "the database is not migrated: run `meterfix db upgrade` first"
BEHIND = "the database schema is not up to date: run `meterfix db upgrade` first"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(params=DB_PARAMS)
def bare_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nobody migrated: a SQLite file not made yet, or an empty PostgreSQL schema."""
    yield from _empty_database(request.param, tmp_path)


@dataclass(frozen=True)
class Served:
    url: str
    app: Flask


@pytest.fixture
def serve(
    make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> Iterator[Callable[[str], Served]]:
    """Start the service app on `url`'s database on a loopback port."""
    started: list[Any] = []

    def start(url: str) -> Served:
        settings = make_settings(
            database_url=url,
            stripe_api_key="sk_test_x",
            stripe_webhook_secrets=[SECRET],
            mfx_admin_token=TOKEN,
        )
        app = make_app(settings)
        server = serve_wsgi(app)
        started.append(server)
        return Served(server.__enter__().url, app)

    yield start
    for server in reversed(started):
        server.__exit__(None, None, None)


def _webhook(base: str) -> requests.Response:
    return post_signed(base, load_event("thin_error_report_triggered"), SECRET)


def _api(base: str, path: str) -> requests.Response:
    return requests.get(f"{base}{path}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)


def _dashboard_page(base: str, path: str) -> requests.Response:
    browser = requests.Session()
    form = CSRF.search(browser.get(f"{base}/login", timeout=10).text)
    assert form is not None
    login = {"token": TOKEN, "csrf_token": form.group(1)}
    assert browser.post(f"{base}/login", data=login, allow_redirects=False, timeout=10).ok
    return browser.get(f"{base}{path}", allow_redirects=False, timeout=10)


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    lines = [r.msg for r in caplog.records if isinstance(r.msg, EventLine)]
    return [line.fields for line in lines if line.event == name]


def _inbox_count(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM inbox_events")).scalar_one())
    finally:
        engine.dispose()


def test_a_database_never_migrated_is_not_ready_and_every_route_says_why(
    bare_db_url: str, serve: Callable[[str], Served], caplog: pytest.LogCaptureFixture
) -> None:
    base = serve(bare_db_url).url
    with caplog.at_level(logging.INFO, logger="meterfix"):
        ready = requests.get(f"{base}/readyz", timeout=10)
        webhook = _webhook(base)
        api = _api(base, "/api/alerts")
        metrics = requests.get(f"{base}/metrics", timeout=10)
        page = _dashboard_page(base, "/alerts")
        alive = requests.get(f"{base}/healthz", timeout=10)
    assert (ready.status_code, ready.json()) == (
        503,
        {"status": "unavailable", "error": NOT_MIGRATED},
    )
    assert (webhook.status_code, webhook.json()) == (503, {"error": NOT_MIGRATED})
    assert (api.status_code, api.json()) == (503, {"error": NOT_MIGRATED})
    assert (metrics.status_code, metrics.text) == (503, NOT_MIGRATED)
    assert (page.status_code, page.text) == (503, NOT_MIGRATED)
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})  # liveness: the process
    [refused] = _events(caplog, "webhook.schema_not_current")
    assert refused["reason"] == NOT_MIGRATED
    paths = [line["path"] for line in _events(caplog, "web.schema_not_current")]
    assert paths == ["/api/alerts", "/metrics", "/alerts"]
    assert [line["reason"] for line in _events(caplog, "web.not_ready")] == [NOT_MIGRATED]
    assert "OperationalError" not in caplog.text and "ProgrammingError" not in caplog.text
    assert bare_db_url not in caplog.text and "sqlite://" not in caplog.text


def test_a_database_one_revision_behind_is_not_ready_and_stores_nothing(
    bare_db_url: str, serve: Callable[[str], Served]
) -> None:
    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    head = scripts.get_revision(scripts.get_current_head())
    assert head is not None and isinstance(head.down_revision, str)
    upgrade(bare_db_url, head.down_revision)
    base = serve(bare_db_url).url
    ready = requests.get(f"{base}/readyz", timeout=10)
    webhook = _webhook(base)
    api = _api(base, "/api/events")
    metrics = requests.get(f"{base}/metrics", timeout=10)
    assert (ready.status_code, ready.json()["error"]) == (503, BEHIND)
    assert (webhook.status_code, webhook.json()) == (503, {"error": BEHIND})
    assert (api.status_code, api.json()) == (503, {"error": BEHIND})
    assert (metrics.status_code, metrics.text) == (503, BEHIND)
    assert _inbox_count(bare_db_url) == 0  # nothing taken into a schema this code is not for


def test_a_running_server_is_ready_once_the_database_is_upgraded_and_stays_one_query(
    bare_db_url: str,
    serve: Callable[[str], Served],
) -> None:
    """No restart after `meterfix db upgrade`; once at head, /readyz is `SELECT 1` alone."""
    served = serve(bare_db_url)
    base = served.url
    assert requests.get(f"{base}/readyz", timeout=10).status_code == 503
    assert _webhook(base).status_code == 503
    upgrade(bare_db_url)
    assert requests.get(f"{base}/readyz", timeout=10).json() == {"status": "ok"}
    stored = _webhook(base)
    assert (stored.status_code, stored.json()["status"]) == (200, "stored")
    assert _api(base, "/api/events").json()["data"][0]["event_id"] == stored.json()["id"]
    assert requests.get(f"{base}/metrics", timeout=10).status_code == 200
    statements: list[str] = []
    engine = served.app.extensions["meterfix"].engine
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    for _ in range(3):
        assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
    assert statements == ["SELECT 1"] * 3


def test_a_database_unreachable_at_start_then_unmigrated_then_upgraded(
    tmp_path: Path, serve: Callable[[str], Served]
) -> None:
    """SQLite in a directory not made yet: down, then there but bare, then at head, on one
    running server (a database down at start never needs a restart)."""
    url = f"sqlite:///{tmp_path / 'later' / 'meterfix.db'}"
    base = serve(url).url
    down = requests.get(f"{base}/readyz", timeout=10)
    assert (down.status_code, down.json()["error"]) == (503, "OperationalError")
    assert _webhook(base).json() == {"error": "database unavailable"}
    (tmp_path / "later").mkdir()
    bare = requests.get(f"{base}/readyz", timeout=10)
    assert (bare.status_code, bare.json()["error"]) == (503, NOT_MIGRATED)
    assert _webhook(base).json() == {"error": NOT_MIGRATED}
    upgrade(url)
    assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
    assert _webhook(base).status_code == 200
