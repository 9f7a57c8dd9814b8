"""The quarantine filter `rerun=yes|no`: the rows quarantined by quarantine re-runs, or by
any other run (new input), on the API, the CSV, the page, and in a digest's links past
`MAX_LINK_RUNS` runs (a real file and two re-runs of its rows, as test_digest_reruns.py makes
them: the sandbox Stripe, the worker, SQLite and PostgreSQL).

Before: no such filter (`rerun=yes` was refused as an unknown one), and a digest whose window
held more than 20 quarantining runs linked the rows quarantined in the window, new input's and
re-runs' alike: its new input's link opened the re-runs' rows too (which it does not count),
its re-runs' line the new input's."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlmodel import Session, col, select

from service.config import Settings
from service.db import make_engine
from service.models import QuarantinedRow
from service.models._types import utcnow
from service.notify import urls
from service.notify.content import collect_digest
from service.notify.windows import Window
from tests.conftest import SandboxServer
from tests.integration.test_digest_reruns import BASE, _file_then_two_reruns
from tests.integration.test_web_rerun import TOKEN, _settings

BEARER = {"Authorization": f"Bearer {TOKEN}"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _logged_in(app: Flask) -> FlaskClient:
    """A dashboard session, logged in through the form (the API takes the bearer token)."""
    client = app.test_client()
    found = CSRF.search(client.get("/login").get_data(as_text=True))
    assert found is not None
    form = {"token": TOKEN, "csrf_token": found.group(1), "next": "/"}
    assert client.post("/login", data=form).status_code == 302
    return client


def _ids_of_runs(db_url: str, runs: list[int]) -> list[int]:
    """Every row these runs quarantined (those a later re-run took too), newest first."""
    engine = make_engine(db_url)
    with Session(engine) as session:
        query = select(QuarantinedRow.id).where(col(QuarantinedRow.run_id).in_(runs))
        found = sorted(session.exec(query).all(), reverse=True)
    engine.dispose()
    return [int(i) for i in found]


def _listed(client: Any, query: str) -> list[int]:
    answer = client.get(f"/api/quarantine?{query}", headers=BEARER)
    assert answer.status_code == 200, answer.get_json()
    return [int(row["id"]) for row in answer.get_json()["data"]]


def _made(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> tuple[Flask, int, list[int]]:
    settings = _settings(make_settings, sandbox_server, db_url, mfx_public_url=BASE)
    engine = make_engine(db_url)
    app = make_app(settings)
    first, reruns = _file_then_two_reruns(sandbox_server, settings, engine, tmp_path, app)
    engine.dispose()
    assert first.id is not None
    return app, first.id, [int(r.id) for r in reruns if r.id is not None]


def test_rerun_yes_and_no_list_the_rows_of_reruns_and_of_other_runs(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """README (Dashboard, API): `rerun=yes` the rows the two re-runs quarantined (3 and 2),
    `rerun=no` the file's 3 (all taken by the first re-run since: listed, as `run=` lists
    them), in the API, the CSV and the page, which shows the filter and keeps it."""
    app, first, reruns = _made(sandbox_server, db_url, tmp_path, make_settings, make_app)
    client = _logged_in(app)
    by_reruns, by_file = _ids_of_runs(db_url, reruns), _ids_of_runs(db_url, [first])
    assert (len(by_reruns), len(by_file)) == (5, 3)
    assert _listed(client, "rerun=yes") == by_reruns
    assert _listed(client, "rerun=no") == by_file
    assert _listed(client, "rerun=YES&limit=500") == by_reruns
    assert _listed(client, "rerun=yes&limit=2") == by_reruns[:2]
    csv_text = client.get("/api/quarantine.csv?rerun=no", headers=BEARER).get_data(as_text=True)
    assert [int(line.split(",")[0]) for line in csv_text.splitlines()[1:]] == by_file
    page = client.get("/quarantine?rerun=yes&limit=2", headers=BEARER).get_data(as_text=True)
    assert page.count('data-testid="quarantine-row"') == 2
    assert '<option value="yes" selected>' in page.split('name="rerun"')[1].split("</select>")[0]
    assert 'name="rerun" value="yes"' in page  # the re-run form keeps it
    assert "rerun=yes" in page.split('data-testid="csv-download"')[0].rsplit("<a", 1)[1]
    following = re.search(r'data-testid="next-page" href="([^"]+)"', page)
    assert following is not None and "rerun=yes" in following.group(1)
    rest = client.get(unescape(following.group(1))).get_data(as_text=True)
    assert [f'id="q-{i}"' in rest for i in by_reruns] == [False] * 2 + [True] * 2 + [False]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("rerun=maybe", "rerun must be yes or no, not 'maybe'"),
        ("rerun=yes&rerun=no", "rerun is given more than once, with different values"),
    ],
)
def test_a_bad_rerun_value_is_refused_with_its_reason(
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
    db_url: str,
    query: str,
    reason: str,
) -> None:
    """A value neither yes nor no, or two different ones, is a 400 saying so: on the API's
    list, the CSV, the page and a re-run (which refuses an empty one too, as every filter)."""
    app = make_app(make_settings(database_url=db_url, mfx_admin_token=TOKEN))
    client = _logged_in(app)
    for path in ("/api/quarantine", "/api/quarantine.csv"):
        answer = client.get(f"{path}?{query}", headers=BEARER)
        assert answer.status_code == 400 and answer.get_json()["error"] == reason, path
    page = client.get(f"/quarantine?{query}", headers=BEARER)
    assert page.status_code == 400 and reason.replace("'", "&#39;") in page.get_data(as_text=True)
    rerun = client.post(f"/api/quarantine/rerun?{query}", headers=BEARER)
    assert rerun.status_code == 400 and rerun.get_json()["error"] == reason
    empty = client.post("/api/quarantine/rerun?rerun=", headers=BEARER)
    assert empty.status_code == 400 and empty.get_json()["error"].startswith("rerun has no value")


def test_a_digests_links_past_max_link_runs_open_the_rows_it_counts(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """README (Digests): with more runs than a link names (here any: `MAX_LINK_RUNS` 0), the
    new input's links are the window's rows `rerun=no`, the re-runs' line's `rerun=yes`;
    each opens exactly the rows the digest counts there (3 and 5). Before: both opened the
    window's rows listed by default, the second re-run's 2 (the rows the others quarantined
    were taken by a re-run since): neither line's."""
    app, first, reruns = _made(sandbox_server, db_url, tmp_path, make_settings, make_app)
    monkeypatch.setattr(urls, "MAX_LINK_RUNS", 0)
    now = utcnow()
    engine = make_engine(db_url)
    digest = collect_digest(
        engine, Window(now - timedelta(hours=1), now), public_url=BASE, examples=False
    )
    engine.dispose()
    client = _logged_in(app)

    def opened(link: str) -> list[int]:
        parts = urlsplit(link)
        assert parts.path == "/quarantine" and "since=" in parts.query, link
        page = client.get(f"{parts.path}?{parts.query}&limit=500", headers=BEARER)
        assert page.status_code == 200
        return sorted(_listed(client, f"{parts.query}&limit=500"), reverse=True)

    by_file, by_reruns = _ids_of_runs(db_url, [first]), _ids_of_runs(db_url, reruns)
    assert digest.totals.quarantined == len(by_file) == 3
    assert digest.reruns.quarantined == len(by_reruns) == 5
    assert "rerun=no" in digest.links["quarantine"]
    assert opened(digest.links["quarantine"]) == by_file
    assert "rerun=yes" in digest.reruns_url
    assert opened(digest.reruns_url) == by_reruns
    for line in digest.codes:
        if line.url:
            assert len(opened(line.url)) == line.quarantined, line
    for group in digest.groups:
        assert len(opened(group.url)) == group.rows, group
