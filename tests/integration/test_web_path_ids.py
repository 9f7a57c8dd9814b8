"""Ids in paths are ASCII digits (SQLite and PostgreSQL, Flask's test client): Werkzeug's
`<int:...>` took any Unicode digit, so `/api/runs/%D9%A3` (Arabic-Indic three) answered run 3
and `/api/alerts/٣/resolve` resolved alert 3, while query parameters refuse such digits. Now
such a path is no route: a 404, as `/api/runs/abc` is, on the API and on the dashboard."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from service.config import Settings
from service.db import make_engine
from service.models import AdminAction, Alert
from tests.integration import web_seed as seed

TOKEN = "path-ids-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
# Arabic-Indic, extended Arabic-Indic, Devanagari and fullwidth digits: each a `\d`
OTHER_DIGITS = ["%D9%A3", "%DB%B3", "%E0%A5%A9", "%EF%BC%93", "1%D9%A3"]


@dataclass
class Site:
    client: FlaskClient
    engine: Engine
    run_id: int
    alert_id: int

    def untouched(self) -> None:
        with Session(self.engine) as session:
            assert session.exec(select(Alert.status)).all() == ["open"] * 3
            assert session.exec(select(AdminAction).order_by(col(AdminAction.id))).all() == []


@pytest.fixture
def site(
    db_url: str, admin_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> Iterator[Site]:
    settings = admin_settings(TOKEN)
    engine = make_engine(db_url)
    run_id = seed.run(engine, "cli:path-ids")
    alert_id = seed.alert(engine, "path-ids")
    assert (run_id, alert_id) == (1, 1)  # the ids the other digits spell (1 or 3)
    for key in ("cli:second", "cli:third"):
        seed.run(engine, key)
    for key in ("second", "third"):
        seed.alert(engine, key)
    yield Site(make_app(settings).test_client(), engine, run_id, alert_id)
    engine.dispose()


@pytest.mark.parametrize("digits", OTHER_DIGITS)
def test_an_api_path_id_of_other_digits_is_404_and_acts_on_nothing(site: Site, digits: str) -> None:
    no_route = site.client.get("/api/runs/abc", headers=BEARER)
    assert no_route.status_code == 404
    for method, path in [
        ("GET", f"/api/runs/{digits}"),
        ("POST", f"/api/alerts/{digits}/acknowledge"),
        ("POST", f"/api/alerts/{digits}/resolve"),
    ]:
        answer = site.client.open(path, method=method, headers=BEARER)
        assert (answer.status_code, answer.get_json()) == (404, no_route.get_json()), path
    site.untouched()
    assert site.client.get("/api/runs/3", headers=BEARER).get_json()["id"] == 3


@pytest.mark.parametrize("digits", OTHER_DIGITS)
def test_a_dashboard_path_id_of_other_digits_is_404_and_acts_on_nothing(
    site: Site, digits: str
) -> None:
    found = CSRF.search(site.client.get("/login").get_data(as_text=True))
    assert found is not None
    form = {"token": TOKEN, "csrf_token": found.group(1)}
    assert site.client.post("/login", data=form).status_code == 302
    csrf = CSRF.search(site.client.get("/alerts").get_data(as_text=True))
    assert csrf is not None
    assert site.client.get(f"/runs/{digits}").status_code == 404
    for action in ("acknowledge", "resolve"):
        posted = site.client.post(f"/alerts/{digits}/{action}", data={"csrf_token": csrf[1]})
        assert posted.status_code == 404
    site.untouched()
    assert site.client.get("/runs/3").status_code == 200
