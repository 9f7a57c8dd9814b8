"""Hostile and large input to the web layer (dashboard login, admin API, CSV export,
/metrics), over real HTTP (werkzeug on a loopback port) on SQLite, and on PostgreSQL when
MFX_TEST_DATABASE_URL is set. Each test failed on the code before its fix (the docstrings say
what went wrong)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from flask import Flask
from sqlalchemy import Engine

from service.config import Settings
from service.db import make_engine
from tests.integration import web_seed as seed
from tests.servers import serve_wsgi

TOKEN = "hostile-web-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Site:
    url: str
    engine: Engine
    browser: requests.Session

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.browser.get(self.url + path, timeout=10, allow_redirects=False, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.browser.post(self.url + path, timeout=10, allow_redirects=False, **kwargs)

    def login_form_csrf(self, path: str = "/login") -> str:
        found = CSRF.search(self.get(path).text)
        assert found is not None
        return found.group(1)


@pytest.fixture
def site(
    db_url: str, make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> Iterator[Site]:
    with seed.served(db_url, make_settings, make_app, TOKEN) as (url, engine, browser):
        yield Site(url, engine, browser)


# --- /metrics ------------------------------------------------------------------------------


def test_metrics_row_counts_past_a_million_are_exact(site: Site) -> None:
    """README: "`/metrics` exposes the counts" (rows in, valid, corrected, quarantined), and
    "Counts come from the database" (service/web/metrics.py). A run of 1,234,567 rows was
    exposed as `1.23457e+06`: `f"{value:g}"` keeps 6 significant digits, so every count of a
    million rows or more is rounded (a dashboard or alert on these series is off by up to
    5 rows a million, and a rate() over them moves in steps of 10)."""
    seed.run(
        site.engine,
        "cli:million",
        input_rows=1_234_567,
        valid=1_000_001,
        corrected=234_565,
        quarantined=1,
        by_code={},
    )
    response = site.get("/metrics")
    assert response.status_code == 200
    samples = dict(
        line.rsplit(" ", 1)
        for line in response.text.splitlines()
        if line.startswith("meterfix_remediation_rows{")
    )
    assert samples['meterfix_remediation_rows{outcome="input"}'] == "1234567"
    assert samples['meterfix_remediation_rows{outcome="valid"}'] == "1000001"


# --- login: where it sends the browser, and hostile form values ----------------------------


def _login(site: Site, next_path: str, csrf: str | None = None) -> requests.Response:
    form = {"token": TOKEN, "csrf_token": csrf or site.login_form_csrf(), "next": next_path}
    return site.post("/login", data=form)


def test_login_next_with_a_tab_is_no_redirect_to_another_site(site: Site) -> None:
    """pages.py `_next_path`: "Only a path on this site (no open redirect)"; README: the login
    form "takes the token and sets a signed session cookie". A `next` of `/<TAB>/evil.example`
    passes the check (it starts with one `/`), and werkzeug's `redirect` drops the tab from
    the Location header: the admin who logs in through
    `/login?next=/%09/evil.example` is sent to `//evil.example`, another host (browsers
    drop tabs and newlines from URLs too)."""
    response = _login(site, "/\t/evil.example/phish")
    assert response.status_code == 302
    target = urljoin(site.url + "/login", response.headers["Location"])
    assert urlsplit(target).netloc == urlsplit(site.url).netloc, response.headers["Location"]


def test_login_next_with_a_line_break_is_not_a_500(site: Site) -> None:
    """docs/architecture.md, reliability contract: "No input produces a traceback, a 500". A login
    link `/login?next=/%0Ax` (the form keeps `next` in a hidden field) makes the right token
    answer 500: `_next_path` lets the line break through and werkzeug refuses it in the
    Location header (ValueError: Header values must not contain newline characters)."""
    response = _login(site, "/\nx")
    assert response.status_code == 302, (response.status_code, response.text[:200])
    assert response.headers["Location"].startswith("/")


def test_a_non_ascii_csrf_token_on_the_login_form_is_403_not_500(site: Site) -> None:
    """README: "Every button posts a CSRF token" and errors are "403 missing CSRF token";
    docs/architecture.md: "No input produces a traceback, a 500". Anyone may open /login (it
    sets the session's CSRF token) and post it back: a `csrf_token` holding a non-ASCII
    character made `hmac.compare_digest` raise TypeError (it compares only ASCII str), a 500
    with a traceback, before any login."""
    site.login_form_csrf()  # the session now holds a CSRF token
    response = site.post("/login", data={"token": "x", "csrf_token": "é"})
    assert response.status_code == 403, (response.status_code, response.text[:200])


def test_a_non_ascii_csrf_header_on_an_api_post_is_403_json_not_500(site: Site) -> None:
    """README: "a dashboard session may call [the API] too, with `X-CSRF-Token` on POST";
    errors are JSON, "403 missing CSRF token". An `X-CSRF-Token` header with a byte past
    ASCII (werkzeug reads headers as latin-1) raised TypeError in `hmac.compare_digest`: a
    500 instead of the 403 JSON answer."""
    alert_id = seed.alert(site.engine, "csrf")
    assert _login(site, "/").status_code == 302
    response = site.post(f"/api/alerts/{alert_id}/acknowledge", headers={"X-CSRF-Token": "é"})
    assert response.status_code == 403, (response.status_code, response.text[:200])
    assert "CSRF" in response.json()["error"]


# --- the quarantine CSV download -----------------------------------------------------------


def _csv_rows(site: Site, query: str) -> list[dict[str, str]]:
    response = site.get(f"/api/quarantine.csv?{query}", headers=BEARER)
    assert response.status_code == 200, response.text[:200]
    return list(csv.DictReader(io.StringIO(response.text)))


def test_quarantine_csv_neutralises_a_formula_that_starts_with_minus(site: Site) -> None:
    """service/web/quarantine.py: "a cell a spreadsheet would run as a formula gets a leading
    quote". Excel and LibreOffice run a cell starting with `-` as a formula as they do `=`,
    `+` and `@` (the classic `-2+3+cmd|' /C calc'!A0`), but `FORMULA_STARTS` leaves `-` out:
    an identifier or customer taken from a usage file reaches the operator's spreadsheet as
    a live formula."""
    run_id = seed.run(site.engine, "cli:minus")
    payload = "-2+3+cmd|' /C calc'!A0"
    seed.quarantined(
        site.engine, run_id, [{"identifier": payload, "code": "no_meter", "customer": "-1+1"}]
    )
    [row] = _csv_rows(site, f"run={run_id}")
    assert row["identifier"] == "'" + payload
    assert row["customer"] == "'-1+1"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/quarantine?cod=no_meter", "cod"),
        ("/api/quarantine.csv?custmer=cus_1", "custmer"),
        ("/api/alerts?stauts=open", "stauts"),
        ("/api/events?limit=5&state=dead", "state"),
        ("/api/runs?page=2", "page"),
    ],
)
def test_a_misspelt_list_parameter_is_a_400_not_every_row(site: Site, path: str, name: str) -> None:
    """The brief: "a bad request gets a 400 with a reason". A misspelt filter on a list
    (`?cod=no_meter`) was ignored: the answer was every row, read as the filtered list (a
    CSV download of "this customer's rows" held everyone's)."""
    run_id = seed.run(site.engine, "cli:misspelt")
    seed.quarantined(site.engine, run_id, [{"identifier": "q1", "code": "no_meter"}])
    response = site.get(path, headers=BEARER)
    assert response.status_code == 400, response.text[:200]
    assert f"unknown parameter '{name}'" in response.json()["error"]


def _set_record(engine: Engine, row_id: int, record: dict[str, object]) -> None:
    """The row's record as the remediation stores it (seed.quarantined writes a plain one)."""
    from sqlalchemy import update

    from service.jobs.store.quarantine import QUARANTINE

    with engine.begin() as connection:
        query = update(QUARANTINE).where(QUARANTINE.c.id == row_id)
        connection.execute(query.values(record=record))


def test_quarantine_csv_shows_json_values_as_json_not_python_text_or_braces(site: Site) -> None:
    """README: a JSON row of the wrong shape ("a payload that is not an object, an identifier
    or event name that is an object, a list or a boolean") is "a malformed row, each value
    quarantined as it came, never `{}` or Python's text of it"; README (admin API): the
    CSV download holds the rows `GET /api/quarantine` lists. `meterfix remediate`
    quarantines `"event_name": ["api_requests"]`, `"timestamp": true` and `"payload": false`
    as they came, and the JSON API shows them so; the CSV's cells are Python's `str()`
    (`['api_requests']`, `True`) and, for a payload that is falsy, `{}`."""
    run_id = seed.run(site.engine, "cli:shapes")
    [first, second] = seed.quarantined(
        site.engine,
        run_id,
        [
            {"identifier": "a1", "code": "malformed_row", "meter": "api_requests"},
            {"identifier": "p2", "code": "malformed_row", "meter": "api_requests"},
        ],
    )
    _set_record(
        site.engine,
        first,
        {
            "identifier": "a1",
            "timestamp": True,
            "event_name": ["api_requests"],
            "payload": {"stripe_customer_id": "cus_1", "value": "5"},
            "mfx_code": "malformed_row",
            "mfx_reason": "event_name is a JSON list, not text",
        },
    )
    _set_record(
        site.engine,
        second,
        {
            "identifier": "p2",
            "timestamp": 1764500000,
            "event_name": "api_requests",
            "payload": False,
            "mfx_code": "malformed_row",
            "mfx_reason": "payload is a JSON boolean, not an object",
        },
    )
    listed = site.get(f"/api/quarantine?run={run_id}", headers=BEARER).json()["data"]
    by_id = {row["identifier"]: row["record"] for row in listed}
    assert by_id["a1"]["event_name"] == ["api_requests"] and by_id["p2"]["payload"] is False
    cells = {row["identifier"]: row for row in _csv_rows(site, f"run={run_id}")}
    assert (cells["a1"]["event_name"], cells["a1"]["timestamp"]) == ('["api_requests"]', "true")
    assert cells["p2"]["payload"] == "false"


# --- PostgreSQL with a language collation --------------------------------------------------


@pytest.fixture
def icu_pg_url() -> Iterator[str]:
    """A migrated PostgreSQL database whose default collation is a language's (ICU `en-US`),
    as most managed PostgreSQL services create them (en_US.UTF-8), not `C`."""
    import os
    import uuid

    from sqlalchemy import create_engine, make_url, text

    from service.db.migrate import upgrade

    base = os.environ.get("MFX_TEST_DATABASE_URL", "")
    if not base:
        pytest.skip("PostgreSQL only: set MFX_TEST_DATABASE_URL")
    name = f"mfx_icu_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(
            text(
                f"CREATE DATABASE {name} TEMPLATE template0 LOCALE 'C.UTF-8' "
                "LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
            )
        )
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_error_reports_list_their_runs_on_a_language_collated_postgresql(
    icu_pg_url: str,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """README: Lineage `/runs?view=reports` lists "error reports" with their runs, on SQLite
    or PostgreSQL (README: `DATABASE_URL`). `report_run_ids` finds a
    report's runs by a text range on the run key, `error_report:<event>:` up to
    `error_report:<event>;`, which holds only where `:` sorts just before `;` (byte order:
    SQLite, or PostgreSQL with the `C` collation). With a language collation (ICU or glibc
    en_US, the default of most managed databases) `;` sorts before `:`: the range is empty
    and every report shows "—" for its runs, the link from a report to what was done about it
    gone."""
    from service.models import ErrorReport

    engine = make_engine(icu_pg_url)
    run_id = seed.run(
        engine, "error_report:evt_icu_1:usage/day.csv", trigger="error_report", source="x"
    )
    seed._insert(
        engine,
        ErrorReport,
        [
            {
                "event_id": "evt_icu_1",
                "event_type": "v1.billing.meter.error_report_triggered",
                "error_count": 1,
                "status": "remediated",
                "detail": {},
                "created_at": seed.NOW,
            }
        ],
    )
    settings = make_settings(
        database_url=icu_pg_url,
        mfx_admin_token=TOKEN,
        stripe_api_key="sk_test_x",
        stripe_webhook_secrets="whsec_x",
    )
    try:
        with serve_wsgi(make_app(settings)) as server, requests.Session() as browser:
            site = Site(server.url, engine, browser)
            assert _login(site, "/").status_code == 302
            html = site.get("/runs?view=reports").text
    finally:
        engine.dispose()
    [row] = re.findall(r'<tr data-testid="report-row">.*?</tr>', html, re.S)
    assert f'href="/runs/{run_id}"' in row, row


def test_a_date_only_until_takes_in_that_whole_day(site: Site) -> None:
    """README: the quarantine filter's `since=&until=` are dates or times; "until 2026-12-01"
    means through that day, as a person reads it. A date-only `until` was that day's
    midnight: every row of the day was left out (the CSV of "rows until today" held none of
    today's), and `since=D&until=D` was always empty."""
    from datetime import UTC, datetime

    run_id = seed.run(site.engine, "cli:until")
    at = datetime(2026, 12, 1, tzinfo=UTC)
    seed.quarantined(
        site.engine,
        run_id,
        [
            {
                "identifier": "before",
                "code": "no_meter",
                "created_at": at.replace(month=11, day=30),
            },
            {"identifier": "morning", "code": "no_meter", "created_at": at.replace(hour=9)},
            {
                "identifier": "night",
                "code": "no_meter",
                "created_at": at.replace(hour=23, minute=59, second=59, microsecond=999_000),
            },
            {"identifier": "after", "code": "no_meter", "created_at": at.replace(day=2)},
        ],
    )
    day = site.get("/api/quarantine?since=2026-12-01&until=2026-12-01", headers=BEARER).json()
    assert sorted(row["identifier"] for row in day["data"]) == ["morning", "night"]
    through = _csv_rows(site, "until=2026-12-01")
    assert sorted(row["identifier"] for row in through) == ["before", "morning", "night"]
    exact = site.get("/api/quarantine?until=2026-12-01T09:00:00Z", headers=BEARER).json()
    assert sorted(row["identifier"] for row in exact["data"]) == ["before", "morning"]


def test_overview_charts_read_on_two_threads_across_the_hour_do_not_fail(sqlite_url: str) -> None:
    """The dashboard serves requests on threads, and the overview's rows-per-code cache
    (`service.web.overview._KEPT`) is shared by them: a request summing the new hour's window
    dropped the bucket that had just left it while a request begun a moment before still read
    it (a KeyError: a 500 on the overview page, at the turn of an hour). The interpreter is
    made to switch threads often, so the interleaving comes within a few hundred requests."""
    import sys
    import threading
    from datetime import UTC, datetime, timedelta

    from service.web.overview import Bucket, _charts

    engine = make_engine(sqlite_url)
    base = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    errors: list[BaseException] = []

    def requests_at_the_turn(offset: int) -> None:
        for i in range(300):
            try:
                _charts(engine, Bucket.HOUR, base + timedelta(hours=(i + offset) % 2))
            except Exception as exc:
                errors.append(exc)
                return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=requests_at_the_turn, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
        engine.dispose()
    assert not errors, repr(errors[0])


def test_replaying_an_event_a_live_worker_holds_is_refused_on_the_api_and_the_page(
    site: Site,
) -> None:
    """README: `meterfix replay EVENT_ID` re-queues any event or task "but one a live worker
    is processing"; the dashboard's and the API's replay are the same action. They re-queued
    it: a second worker took the item beside the first, which still held it."""
    from datetime import UTC, datetime

    from sqlmodel import Session, select

    from service.models import AdminAction, InboxEvent
    from service.models.inbox import InboxStatus
    from service.worker.tasks import TaskKind, enqueue_task, task_id

    with site.engine.begin() as connection:
        enqueue_task(connection, TaskKind.POLLER_ROWS, "held")
    held = task_id(TaskKind.POLLER_ROWS, "held")
    with Session(site.engine) as session:  # a live worker took it a moment ago
        row = session.exec(select(InboxEvent)).one()
        row.status, row.attempts = InboxStatus.PROCESSING, 1
        row.locked_by, row.locked_at = "host:1:live", datetime.now(UTC)
        session.add(row)
        session.commit()
    csrf = {"X-CSRF-Token": "unused"}  # a bearer token needs none
    api = site.post(f"/api/events/{held}/replay", headers={**BEARER, **csrf})
    assert api.status_code == 409, api.text[:200]
    assert "being processed by worker host:1:live" in api.json()["error"]
    response = site.post("/login", data={"token": TOKEN, "csrf_token": site.login_form_csrf()})
    assert response.status_code == 302
    page = site.post(f"/events/{held}/replay", data={"csrf_token": site.login_form_csrf("/events")})
    assert page.status_code == 302
    shown = site.get(page.headers["Location"]).text
    assert "being processed by worker host:1:live" in shown
    with Session(site.engine) as session:
        row = session.exec(select(InboxEvent)).one()
        actions = session.exec(select(AdminAction)).all()
    assert (row.status, row.attempts, row.locked_by) == (InboxStatus.PROCESSING, 1, "host:1:live")
    assert actions == []  # nothing was replayed, so no replay is recorded
