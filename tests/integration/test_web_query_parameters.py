"""Query parameters the dashboard pages and the admin API lists take, over real HTTP (werkzeug
on a loopback port), SQLite and PostgreSQL: a parameter a page does not take, and one given
twice with different values, are a 400 naming it (as the API's lists answered a misspelt one,
and the quarantine list a filter given twice), never read as less than was asked. Each test
failed on the code before its fix (the docstrings say what went wrong)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import Engine

from service.config import Settings
from tests.integration import web_seed as seed

TOKEN = "query-parameters-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
REASON = re.compile(r'data-testid="error-reason">([^<]*)<')
QUARANTINE_TAKES = "code, meter, customer, run, since, until, taken_again, rerun, limit, cursor"


@dataclass
class Site:
    url: str
    engine: Engine
    browser: requests.Session

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.browser.get(self.url + path, timeout=10, allow_redirects=False, **kwargs)

    def page(self, path: str, status: int = 200) -> str:
        response = self.get(path)
        assert response.status_code == status, response.text[:500]
        return response.text

    def refusal(self, path: str) -> str:
        """The reason of the 400 page `path` answers."""
        found = REASON.search(self.page(path, 400))
        assert found is not None
        return html.unescape(found.group(1))

    def api(self, path: str, status: int = 200) -> Any:
        response = self.get(path, headers=BEARER)
        assert response.status_code == status, response.text[:500]
        return response.json()

    def login(self) -> None:
        found = CSRF.search(self.page("/login"))
        assert found is not None
        form = {"token": TOKEN, "csrf_token": found.group(1)}
        response = self.browser.post(self.url + "/login", data=form, allow_redirects=False)
        assert response.status_code == 302


@pytest.fixture
def site(
    db_url: str, make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> Iterator[Site]:
    with seed.served(db_url, make_settings, make_app, TOKEN) as (url, engine, browser):
        yield Site(url, engine, browser)


def _quarantine_rows(engine: Engine) -> None:
    run_id = seed.run(engine, "import_set:impset_q:file_q")
    seed.quarantined(
        engine,
        run_id,
        [
            {"identifier": "nm-1", "code": "no_meter", "meter": "api", "customer": "cus_1"},
            {"identifier": "nm-2", "code": "no_meter", "meter": "api", "customer": "cus_2"},
            {"identifier": "old-3", "code": "archived_meter", "meter": "old", "customer": "c3"},
        ],
    )


def _listed(page: str) -> list[str]:
    return sorted(re.findall(r'<td class="key">([a-z]+-\d)</td>', page))


# --- a parameter a page does not take ----------------------------------------------------


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (
            "/quarantine?cod=no_meter",
            f"unknown parameter 'cod'; this page takes {QUARANTINE_TAKES}",
        ),
        ("/runs?foo=1", "unknown parameter 'foo'; this page takes view, limit, cursor"),
        (
            "/runs?view=import_sets&status=unmatched",
            "unknown parameter 'status'; this page takes view, limit, cursor",
        ),
        (
            "/runs?view=reports&colour=red",
            "unknown parameter 'colour'; this page takes view, status, meter, no_meter, since, "
            "until, limit, cursor",
        ),
        ("/events?foo=1", "unknown parameter 'foo'; this page takes status, limit, cursor"),
        (
            "/alerts?stauts=open",
            "unknown parameter 'stauts'; this page takes status, severity, limit, cursor",
        ),
        ("/?bogus=1", "unknown parameter 'bogus'; this page takes by"),
    ],
)
def test_a_page_refuses_a_parameter_it_does_not_take(site: Site, path: str, reason: str) -> None:
    """The API's lists refused a misspelt parameter (400 "unknown parameter"); the pages
    ignored it: `/quarantine?cod=no_meter` showed every quarantined row as if filtered, and
    its "Re-run with current rules" form, holding no filter, re-ran every quarantined row."""
    _quarantine_rows(site.engine)
    site.login()
    assert site.refusal(path) == reason
    body = site.page(path, 400)
    assert 'data-testid="quarantine-row"' not in body and 'data-testid="rerun-button"' not in body


def test_the_quarantine_page_lists_and_reruns_only_the_rows_its_filter_names(site: Site) -> None:
    """After the refusal, the parameter spelt right lists the filtered rows and the re-run
    form holds the filter (a click re-runs those rows, not every quarantined one)."""
    _quarantine_rows(site.engine)
    site.login()
    assert "unknown parameter 'cod'" in site.refusal("/quarantine?cod=no_meter")
    page = site.page("/quarantine?code=no_meter")
    assert _listed(page) == ["nm-1", "nm-2"]
    assert '<input type="hidden" name="code" value="no_meter">' in page
    found = CSRF.search(page)
    assert found is not None
    form = {"csrf_token": found.group(1), "code": "no_meter"}
    posted = site.browser.post(site.url + "/quarantine/rerun", data=form, timeout=10)
    assert posted.status_code == 200 and "Re-run of 2 rows queued" in posted.text


def test_the_dashboard_rerun_refuses_a_filter_name_it_does_not_know(site: Site) -> None:
    """The API's re-run refused a misspelt filter in its form ("unknown filter"); the
    dashboard's re-run read `cod=no_meter` as no filter and queued every quarantined row."""
    _quarantine_rows(site.engine)
    site.login()
    found = CSRF.search(site.page("/quarantine"))
    assert found is not None
    form = {"csrf_token": found.group(1), "cod": "no_meter"}
    posted = site.browser.post(site.url + "/quarantine/rerun", data=form, timeout=10)
    assert posted.status_code == 400 and "Re-run of" not in posted.text
    reason = REASON.search(posted.text)
    assert reason is not None
    assert html.unescape(reason.group(1)).startswith("unknown filter 'cod'; the filters are code")
    assert 'data-testid="admin-action"' not in site.page("/quarantine")  # nothing queued


def test_the_other_pages_list_what_their_parameters_name(site: Site) -> None:
    seed.event(site.engine, "evt_done")
    seed.event(site.engine, "evt_dead", status="dead")
    seed.alert(site.engine, "open-1", subject="Still open")
    seed.alert(site.engine, "resolved-1", subject="Long resolved", status="resolved")
    site.login()
    dead = site.page("/events?status=dead&limit=5")
    assert dead.count('data-testid="event-row"') == 1 and "evt_dead" in dead
    resolved = site.page("/alerts?status=resolved&severity=critical")
    assert resolved.count('data-testid="alert-row"') == 1 and "Long resolved" in resolved
    assert 'data-testid="chart-rows"' in site.page("/?by=hour")
    assert 'data-testid="reports-table"' in site.page("/runs?view=reports&status=unmatched")


# --- a parameter given twice with different values ----------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/alerts?status=resolved&status=open", "status"),
        ("/api/alerts?severity=critical&severity=warning", "severity"),
        ("/api/events?status=done&status=dead", "status"),
        ("/api/runs?limit=1&limit=50", "limit"),
        ("/api/runs?cursor=5&cursor=9", "cursor"),
        ("/api/reports?meter=a&meter=b", "meter"),
        ("/api/reports?limit=1&limit=2", "limit"),
        ("/api/quarantine?code=a&code=b", "code"),
        ("/api/quarantine?limit=1&limit=3", "limit"),
        ("/api/quarantine.csv?meter=a&meter=b", "meter"),
    ],
)
def test_an_api_list_refuses_a_parameter_given_twice_with_different_values(
    site: Site, path: str, name: str
) -> None:
    """`/api/quarantine?code=a&code=b` was refused, but `/api/alerts?status=resolved&
    status=open` listed the resolved alerts alone, `/api/events?status=done&status=dead` the
    done events, `/api/runs?limit=1&limit=50` one run: the first value, the others unsaid."""
    error = site.api(path, 400)["error"]
    assert error == f"{name} is given more than once, with different values"


def test_an_api_list_reads_a_parameter_given_twice_alike_as_once(site: Site) -> None:
    seed.event(site.engine, "evt_done")
    seed.event(site.engine, "evt_dead", status="dead")
    seed.alert(site.engine, "open-1")
    seed.alert(site.engine, "resolved-1", status="resolved")
    for n in range(3):
        seed.run(site.engine, f"cli:twice-{n}")
    events = site.api("/api/events?status=dead&status=dead")["data"]
    assert [event["event_id"] for event in events] == ["evt_dead"]
    alerts = site.api("/api/alerts?status=resolved&status=resolved")["data"]
    assert [alert["key"] for alert in alerts] == ["resolved-1"]
    runs = site.api("/api/runs?limit=2&limit=2")
    assert len(runs["data"]) == 2 and runs["next_cursor"] is not None
    # the parameters that take several values still take them
    assert site.api("/api/reports?status=unmatched&status=partial")["data"] == []


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/alerts?status=resolved&status=open", "status"),
        ("/events?status=done&status=dead", "status"),
        ("/runs?limit=1&limit=50", "limit"),
        ("/runs?view=runs&view=reports", "view"),
        ("/runs?view=reports&meter=a&meter=b", "meter"),
        ("/quarantine?limit=1&limit=3", "limit"),
        ("/?by=hour&by=day", "by"),
    ],
)
def test_a_page_refuses_a_parameter_given_twice_with_different_values(
    site: Site, path: str, name: str
) -> None:
    site.login()
    assert site.refusal(path) == f"{name} is given more than once, with different values"


def test_a_page_reads_a_parameter_given_twice_alike_as_once(site: Site) -> None:
    _quarantine_rows(site.engine)
    seed.event(site.engine, "evt_done")
    seed.event(site.engine, "evt_dead", status="dead")
    site.login()
    dead = site.page("/events?status=dead&status=dead")
    assert dead.count('data-testid="event-row"') == 1 and "evt_dead" in dead
    assert _listed(site.page("/quarantine?code=no_meter&code=no_meter")) == ["nm-1", "nm-2"]
