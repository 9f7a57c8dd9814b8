"""The re-run's filter, refused when it would be read as less than it says (SQLite and
PostgreSQL, Flask's test client): a null or an empty value, and a filter given twice with
different values, were read as no filter (or as one of the two), and the re-run queued then
took every quarantined row. Each test failed on the code before its fix."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from service.config import Settings
from service.db import make_engine
from service.models import AdminAction, InboxEvent
from tests.integration import web_seed as seed

TOKEN = "rerun-filters-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Site:
    client: FlaskClient
    engine: Engine
    runs: tuple[int, int]

    def rerun(self, status: int, path: str = "", **kwargs: Any) -> Any:
        response = self.client.post("/api/quarantine/rerun" + path, headers=BEARER, **kwargs)
        assert response.status_code == status, response.get_data(as_text=True)
        return response.get_json()

    def queued(self) -> tuple[list[AdminAction], list[str]]:
        with Session(self.engine) as session:
            actions = list(session.exec(select(AdminAction).order_by(col(AdminAction.id))).all())
            tasks = session.exec(select(InboxEvent.event_id).where(InboxEvent.style == "task"))
            return actions, list(tasks.all())


@pytest.fixture
def site(
    db_url: str, admin_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> Iterator[Site]:
    settings = admin_settings(TOKEN)
    engine = make_engine(db_url)
    run_a = seed.run(engine, "import_set:impset_a:file_a")
    run_b = seed.run(engine, "import_set:impset_b:file_b")
    seed.quarantined(engine, run_a, [{"identifier": "r1", "code": "no_meter", "customer": "c1"}])
    seed.quarantined(engine, run_b, [{"identifier": "r2", "code": "no_meter", "customer": "c2"}])
    yield Site(make_app(settings).test_client(), engine, (run_a, run_b))
    engine.dispose()


EMPTY = "has no value: an empty filter is read as none (every quarantined row); leave it out"
NULL = "is null: a null filter is read as none (every quarantined row); leave it out"


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        ({"json": {"code": None}}, f"code {NULL}"),
        ({"json": {"run": [None]}}, f"run {NULL}"),
        ({"json": {"customer": ""}}, f"customer {EMPTY}"),
        ({"json": {"meter": "  "}}, f"meter {EMPTY}"),
        ({"json": {"run": [""]}}, f"run {EMPTY}"),
        ({"json": {"code": "no_meter", "taken_again": None}}, f"taken_again {NULL}"),
        ({"query_string": "run="}, f"run {EMPTY}"),
        ({"query_string": "code=&customer="}, f"code {EMPTY}"),
        ({"query_string": "run=3&run="}, f"run {EMPTY}"),
        ({"data": {"since": ""}}, f"since {EMPTY}"),
    ],
)
def test_a_null_or_empty_rerun_filter_is_400_and_queues_nothing(
    site: Site, request_: dict[str, Any], reason: str
) -> None:
    """`{"code": null}`, `{"run": [null]}`, `?run=` and `?code=&customer=` answered 202 with
    `"filters": {}` and queued a re-run of every quarantined row."""
    assert site.rerun(400, **request_) == {"error": reason}
    assert site.queued() == ([], [])


@pytest.mark.parametrize(
    ("path", "request_"),
    [
        ("", {"data": '{"run": 999, "run": %d}', "content_type": "application/json"}),
        ("?run=999", {"json": {"run": "%d"}}),
        ("?run=999", {"data": {"run": "%d"}}),
        ("?code=no_meter&run=999", {"data": '{"run": %d}', "content_type": "application/json"}),
    ],
)
def test_a_rerun_filter_given_twice_with_different_values_is_400(
    site: Site, path: str, request_: dict[str, Any]
) -> None:
    """A duplicate JSON key, or a filter in the query string and again in the body, was read
    as one of them, unsaid (the body's): the operator could not know which rows went."""
    run = site.runs[1]
    given = {k: _with_run(v, run) for k, v in request_.items()}
    reason = "run is given more than once, with different values"
    assert site.rerun(400, path, **given) == {"error": reason}
    assert site.queued() == ([], [])
    same = site.rerun(202, f"?run={run}", json={"run": [run]})  # the same run twice: that run
    assert (same["rows"], same["filters"]) == (1, {"run": str(run)})


def _with_run(value: Any, run: int) -> Any:
    if isinstance(value, str):
        return value.replace("%d", str(run))
    if isinstance(value, dict):
        return {k: _with_run(v, run) for k, v in value.items()}
    return value


def test_the_dashboard_rerun_form_refuses_an_empty_filter_and_still_reruns_its_own(
    site: Site,
) -> None:
    """The page's form sends the filters the page was read with, none empty (hidden fields):
    it still re-runs them; an empty one posted by hand is refused as the API refuses it."""
    browser = site.client
    page = browser.get("/login").get_data(as_text=True)
    found = CSRF.search(page)
    assert found is not None
    login = browser.post("/login", data={"token": TOKEN, "csrf_token": found.group(1)})
    assert login.status_code == 302
    shown = browser.get(f"/quarantine?run={site.runs[0]}&code=&customer=").get_data(as_text=True)
    csrf = CSRF.search(shown)
    assert csrf is not None
    form = shown[shown.index('action="/quarantine/rerun"') :].split("</form>")[0]
    hidden = re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form)
    assert hidden == [("csrf_token", csrf.group(1)), ("run", str(site.runs[0]))]
    posted = browser.post("/quarantine/rerun", data=dict(hidden))
    assert posted.status_code == 302
    actions, tasks = site.queued()
    assert [(a.target_id, a.detail["rows"]) for a in actions] == [(f"run={site.runs[0]}", 1)]
    refused = browser.post("/quarantine/rerun", data={"csrf_token": csrf.group(1), "code": ""})
    assert refused.status_code == 400
    assert f"code {EMPTY}" in refused.get_data(as_text=True)
    assert len(site.queued()[1]) == len(tasks) == 1
