"""The dashboard over real HTTP (werkzeug on a loopback port), SQLite and PostgreSQL: login,
the session cookie, CSRF on every POST, each page's content, and the buttons' admin actions."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from flask import Flask
from sqlalchemy import Engine

from remediation.outcomes import OTHER_CODES
from service.config import Settings
from service.web.access import TOKEN_FILE, admin_token, login_banner
from tests.integration import web_seed as seed

TOKEN = "pages-token-abcdef"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Dashboard:
    url: str
    engine: Engine
    browser: requests.Session

    def page(self, path: str, status: int = 200) -> str:
        response = self.browser.get(self.url + path, timeout=10, allow_redirects=False)
        assert response.status_code == status, response.text[:500]
        return response.text

    def csrf(self, path: str = "/") -> str:
        found = CSRF.search(self.page(path))
        assert found is not None
        return found.group(1)

    def login(self) -> requests.Response:
        csrf = CSRF.search(self.page("/login"))
        assert csrf is not None
        form = {"token": TOKEN, "csrf_token": csrf.group(1), "next": "/alerts"}
        return self.browser.post(self.url + "/login", data=form, allow_redirects=False)


@pytest.fixture
def dashboard(
    db_url: str, make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> Iterator[Dashboard]:
    with seed.served(db_url, make_settings, make_app, TOKEN) as (url, engine, browser):
        yield Dashboard(url, engine, browser)


def test_login_sets_a_signed_httponly_samesite_cookie(dashboard: Dashboard) -> None:
    redirect = dashboard.browser.get(dashboard.url + "/quarantine?code=x", allow_redirects=False)
    assert redirect.status_code == 302
    assert redirect.headers["Location"] == "/login?next=/quarantine?code%3Dx"
    assert 'data-testid="login-form"' in dashboard.page("/login")
    wrong = dashboard.browser.post(
        dashboard.url + "/login", data={"token": "nope", "csrf_token": dashboard.csrf("/login")}
    )
    assert wrong.status_code == 401 and "Wrong token" in wrong.text
    response = dashboard.login()
    assert response.status_code == 302 and response.headers["Location"] == "/alerts"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert 'data-testid="nav"' in dashboard.page("/")
    # the same session may call the API; its POSTs need the CSRF token
    assert dashboard.browser.get(dashboard.url + "/api/alerts").json()["data"] == []


def test_posts_without_csrf_token_are_refused(dashboard: Dashboard) -> None:
    alert_id = seed.alert(dashboard.engine, "x")
    seed.event(dashboard.engine, "evt_dead", status="dead")
    dashboard.login()
    for path in (f"/alerts/{alert_id}/acknowledge", "/events/evt_dead/replay", "/quarantine/rerun"):
        assert dashboard.browser.post(dashboard.url + path, data={}).status_code == 403
    api = dashboard.browser.post(dashboard.url + f"/api/alerts/{alert_id}/acknowledge")
    assert api.status_code == 403 and "CSRF" in api.json()["error"]
    login = dashboard.browser.post(dashboard.url + "/login", data={"token": TOKEN})
    assert login.status_code == 403
    assert (
        dashboard.browser.get(dashboard.url + "/api/alerts").json()["data"][0]["status"] == "open"
    )
    headers = {"X-CSRF-Token": dashboard.csrf()}
    done = dashboard.browser.post(
        dashboard.url + f"/api/alerts/{alert_id}/acknowledge", headers=headers
    )
    assert done.status_code == 200 and done.json()["actions"][0]["via"] == "dashboard"


def test_overview_shows_charts_alerts_dead_letters_and_health(dashboard: Dashboard) -> None:
    seed.run(dashboard.engine, "import_set:i:f", created_at=seed.datetime.now(seed.UTC))
    seed.alert(dashboard.engine, "open-one", subject="Whole file failed")
    seed.event(dashboard.engine, "evt_dead", status="dead")
    seed.heartbeat(dashboard.engine, "h:1:w", "worker", age_seconds=3)
    dashboard.login()
    for path in ("/", "/?by=hour"):
        html = dashboard.page(path)
        assert re.search(r'data-testid="chart-rows"><svg[^>]*pygal-chart', html)
        assert re.search(r'data-testid="chart-codes"><svg', html)
        assert "timestamp_in_future" in html and "no_meter" in html  # the codes chart
        assert 'data-testid="open-alerts-count">1<' in html and "Whole file failed" in html
        assert 'data-testid="dead-letters-count">1<' in html and "evt_dead" in html
        assert re.search(r'data-testid="worker-heartbeat-age">\d s ago', html)
        assert 'data-testid="poller-heartbeat-age">never' in html
        assert "<script src" not in html and "kozea.github.io" not in html
    assert "by must be one of hour|day" in dashboard.page("/?by=week", 400)


def test_lineage_pages_follow_a_run_to_its_objects(dashboard: Dashboard) -> None:
    key = "import_set:impset_9:file_9"
    run_id = seed.run(dashboard.engine, key, generation=2, input_generation=0)
    plain = seed.run(dashboard.engine, "import_set:impset_8:file_8", input_generation=0)
    seed.import_set(dashboard.engine, "impset_9", key)
    poller = {"run_key": None, "sent_by_other_versions": 3}
    seed.import_set(dashboard.engine, "impset_local_1", "-", origin="poller", detail=poller)
    seed.output(dashboard.engine, run_id, "corrected", "corrected/impset_9/f.r1.csv")
    seed.output(dashboard.engine, run_id, "quarantine", "quarantine/impset_9/f.r1.csv", rows=3)
    seed.bucket_object(dashboard.engine, "corrected/impset_9/f.r1.csv")
    dashboard.login()
    runs = dashboard.page("/runs")
    assert f'href="/runs/{run_id}" data-testid="run-link"' in runs and "import set impset_9" in runs
    sets = dashboard.page("/runs?view=import_sets")
    assert "impset_9" in sets and f'href="/runs/{run_id}"' in sets
    left_out = 'data-testid="sent-by-other-versions">3 rows left out: sent before from another'
    assert left_out in sets and sets.count('data-testid="sent-by-other-versions"') == 1
    assert 'data-testid="reports-table"' in dashboard.page("/runs?view=reports")
    run = dashboard.page(f"/runs/{run_id}")
    assert 'data-testid="count-corrected">5<' in run
    generation = '2 <span class="small">(raised by lineage: its input traced from generation 0)'
    assert f'data-testid="run-generation">{generation}' in run
    assert 'data-testid="run-generation">1</dd>' in dashboard.page(f"/runs/{plain}")
    assert "corrected/impset_9/f.r1.csv" in run and "quarantine/impset_9/f.r1.csv" in run
    assert re.search(r'data-testid="reimport">\s*yes, <time datetime="2026-11-30T12:01', run)
    assert f'href="/quarantine?run={run_id}"' in run
    assert "no run with id 999" in dashboard.page("/runs/999", 404)


def test_a_runs_codes_link_to_their_quarantined_rows(dashboard: Dashboard) -> None:
    """Each code a run counts links to the run's quarantined rows of that code; the codes it
    did not name (past the first unknown ones: `OTHER_CODES`) to all its quarantined rows,
    not to a code no row has."""
    by_code = {
        "no_meter": {"corrected": 0, "quarantined": 3},
        OTHER_CODES: {"corrected": 0, "quarantined": 4},
    }
    run_id = seed.run(dashboard.engine, "import_set:impset_7:file_7", by_code=by_code)
    dashboard.login()
    run = dashboard.page(f"/runs/{run_id}")
    assert f'href="/quarantine?run={run_id}&amp;code=no_meter">3</a>' in run
    assert f'href="/quarantine?run={run_id}">4</a>' in run
    assert "code=%28other" not in run


def test_quarantine_page_filters_downloads_and_reruns(dashboard: Dashboard) -> None:
    run_id = seed.run(dashboard.engine, "import_set:q:f")
    seed.quarantined(
        dashboard.engine,
        run_id,
        [
            {"identifier": "keep-1", "code": "no_meter", "meter": "api", "customer": "cus_9"},
            {"identifier": "other-2", "code": "archived_meter", "meter": "old", "customer": "c2"},
            {
                "identifier": "again-3",
                "code": "no_meter",
                "meter": "api",
                "customer": "c3",
                "taken_again": "usage/day.csv (ETag e2, uploaded 2026-12-04 10:00 UTC)",
            },
        ],
    )
    dashboard.login()
    html = dashboard.page("/quarantine?code=no_meter&customer=cus_9")
    assert html.count('data-testid="quarantine-row"') == 1 and "keep-1" in html
    assert "reason for keep-1" in html and "other-2" not in html
    assert 'data-testid="q-taken-again"' not in html
    again = dashboard.page("/quarantine?customer=c3")
    assert (
        "taken again by Stripe from usage/day.csv (ETag e2, uploaded 2026-12-04 10:00 UTC): "
        "a re-run leaves it" in again
    )
    api = dashboard.browser.get(dashboard.url + "/api/quarantine?customer=c3").json()
    assert [r["taken_again"] for r in api["data"]] == [
        "usage/day.csv (ETag e2, uploaded 2026-12-04 10:00 UTC)"
    ]
    marked = dashboard.browser.get(dashboard.url + "/api/quarantine?taken_again=yes").json()
    assert [r["identifier"] for r in marked["data"]] == ["again-3"]
    unmarked = dashboard.page("/quarantine?code=no_meter&taken_again=no")
    assert unmarked.count('data-testid="quarantine-row"') == 1 and "keep-1" in unmarked
    assert '<option value="no" selected>' in unmarked
    assert "taken_again must be yes or no, not &#39;maybe&#39;" in dashboard.page(
        "/quarantine?taken_again=maybe", 400
    )
    assert 'href="/api/quarantine.csv?code=no_meter&amp;customer=cus_9"' in html
    csv_text = dashboard.browser.get(
        dashboard.url + "/api/quarantine.csv?code=no_meter&customer=cus_9"
    ).text
    assert csv_text.count("\n") == 2 and "keep-1" in csv_text
    assert "since must be an ISO-8601" in dashboard.page("/quarantine?since=soon", 400)
    form = {"csrf_token": dashboard.csrf("/quarantine"), "code": "no_meter"}
    posted = dashboard.browser.post(dashboard.url + "/quarantine/rerun", data=form)
    assert posted.status_code == 200 and "Re-run of 1 rows queued" in posted.text
    assert "rerun of 1 rows (code=no_meter) via dashboard from 127.0.0.1" in posted.text


def test_events_page_replays_a_dead_letter(dashboard: Dashboard) -> None:
    seed.event(dashboard.engine, "evt_ok")
    seed.event(dashboard.engine, "evt_dead", status="dead")
    dashboard.login()
    dead = dashboard.page("/events?status=dead")
    assert dead.count('data-testid="event-row"') == 1 and "StripeError: boom" in dead
    form = {"csrf_token": dashboard.csrf("/events"), "back": "/events?status=pending"}
    replayed = dashboard.browser.post(dashboard.url + "/events/evt_dead/replay", data=form)
    assert replayed.url.endswith("/events?status=pending") and "evt_dead re-queued" in replayed.text
    assert 'data-testid="event-status">pending<' in replayed.text
    assert "replay via dashboard from 127.0.0.1" in replayed.text
    assert "status must be one of" in dashboard.page("/events?status=zombie", 400)


def test_alerts_page_acknowledges_and_resolves(dashboard: Dashboard) -> None:
    alert_id = seed.alert(dashboard.engine, "a1", subject="Quarantine above threshold")
    dashboard.login()
    html = dashboard.page("/alerts?status=open")
    assert 'data-testid="alert-row"' in html and 'data-testid="ack-button"' in html
    form = {"csrf_token": dashboard.csrf("/alerts"), "back": "/alerts"}
    acked = dashboard.browser.post(dashboard.url + f"/alerts/{alert_id}/acknowledge", data=form)
    assert f"Alert {alert_id} acknowledged." in acked.text
    assert 'data-testid="alert-status">acknowledged<' in acked.text
    assert "acknowledge via dashboard from 127.0.0.1" in acked.text
    resolved = dashboard.browser.post(dashboard.url + f"/alerts/{alert_id}/resolve", data=form)
    assert 'data-testid="alert-status">resolved<' in resolved.text
    again = dashboard.browser.post(dashboard.url + f"/alerts/{alert_id}/resolve", data=form)
    assert "is resolved: cannot resolve" in again.text
    assert dashboard.page("/alerts?status=open").count('data-testid="alert-row"') == 0


def test_an_id_past_what_a_row_id_holds_is_a_404_page(dashboard: Dashboard) -> None:
    dashboard.login()
    assert "no run with id 2147483648" in dashboard.page("/runs/2147483648", 404)
    form = {"csrf_token": dashboard.csrf("/alerts"), "back": "/alerts"}
    posted = dashboard.browser.post(
        dashboard.url + "/alerts/99999999999999999999/resolve", data=form
    )
    assert posted.status_code == 404 and "no alert with id 99999999999999999999" in posted.text


def test_embedded_defaults_generate_keep_and_reuse_a_token(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    work = tmp_path / "work"
    settings = make_settings(mfx_work_dir=str(work))
    assert settings.embedded_sandbox
    token = admin_token(settings)
    path = work / TOKEN_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and len(token) >= 40
    assert admin_token(make_settings(mfx_work_dir=str(work))) == token  # a restart reuses it
    banner = login_banner(settings)
    assert banner is not None and "http://127.0.0.1:4242/login" in banner and token in banner
    redirected = login_banner(settings, show_token=False)  # not a terminal: no token printed
    assert redirected is not None and token not in redirected and str(path) in redirected
    client = make_app(settings).test_client()
    assert client.get("/api/alerts", headers={"Authorization": f"Bearer {token}"}).is_json
    assert client.get("/api/alerts", headers={"Authorization": "Bearer x"}).status_code == 401
    configured = make_settings(mfx_work_dir=str(work), mfx_admin_token="mine-0123456789abcdef")
    assert admin_token(configured) == "mine-0123456789abcdef" and login_banner(configured) is None


def test_quarantine_rows_show_their_row_in_the_input_and_times_their_zone(
    dashboard: Dashboard,
) -> None:
    """Instead: the "Row" column showed the entry's id (row 6 of the demo file read "Row 1"),
    and no time on any page said its zone (UTC: a digest in DIGEST_TZ read an hour apart)."""
    first = seed.run(dashboard.engine, "import_set:a:f")
    seed.quarantined(dashboard.engine, first, [{"identifier": f"a-{i}", "code": "no_meter"}
                                               for i in range(3)])  # fmt: skip
    second = seed.run(dashboard.engine, "import_set:b:f")
    [entry] = seed.quarantined(
        dashboard.engine, second, [{"identifier": "b-1", "code": "no_meter"}]
    )
    assert entry == 4
    dashboard.login()
    html = dashboard.page(f"/quarantine?run={second}")
    assert re.search(r'data-testid="q-row" title="entry 4">1</td>', html), html
    assert re.search(r"<time datetime=\"[^\"]+\">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>", html)
    assert " UTC</time>" in dashboard.page(f"/runs/{second}")


def test_alerts_link_what_they_name(dashboard: Dashboard) -> None:
    """README: a run's quarantine file is "linked from the run's page and its alert", and an
    alert carries "links (run, import set, corrected objects, quarantine file, event)".
    Instead: the alerts page showed neither the quarantine file nor the corrected objects,
    and every event link went to /events#event, an anchor no row has (the top of the list)."""
    run_id = seed.run(dashboard.engine, "import_set:q:f")
    links = {
        "run": run_id,
        "quarantine": "quarantine/impset_q/day.quarantine.r1.csv",
        "objects": ["corrected/impset_q/day.corrected.r1.csv"],
    }
    seed.alert(dashboard.engine, "run", kind="remediation.run", links=links)
    seed.alert(dashboard.engine, "dead", kind="inbox.dead_letter", links={"event": "evt_dead"})
    seed.alert(dashboard.engine, "report", kind="report.unmatched", links={"event": "evt_rep"})
    dashboard.login()
    html = dashboard.page("/alerts")
    assert 'data-testid="alert-quarantine">quarantine/impset_q/day.quarantine.r1.csv<' in html
    assert 'data-testid="alert-object">corrected/impset_q/day.corrected.r1.csv<' in html
    assert '<a data-testid="alert-event" href="/events?status=dead">event evt_dead</a>' in html
    assert '<span data-testid="alert-event">event <span class="key">evt_rep</span>' in html
    assert "#event" not in html


def test_the_overview_says_how_many_open_alerts_it_does_not_list(dashboard: Dashboard) -> None:
    """Instead: the overview listed the ten latest open alerts beside a card counting 12, with
    no word of the two others."""
    for n in range(12):
        seed.alert(dashboard.engine, f"open-{n}", severity="warning")
    seed.alert(dashboard.engine, "done", status="resolved")
    dashboard.login()
    html = dashboard.page("/")
    assert html.count('data-testid="overview-alert-row"') == 10
    assert re.search(
        r'data-testid="overview-alerts-more"><a href="[^"]+">and 2 more open</a>', html
    )


def test_a_path_no_page_has_gets_the_dashboards_own_404(dashboard: Dashboard) -> None:
    """Instead: `/runs/abc` (and any path no page has) answered Flask's bare 404 page, where
    `/runs/999` gets the dashboard's, saying what is missing."""
    dashboard.login()
    html = dashboard.page("/runs/abc", status=404)
    assert 'data-testid="error-reason">no page at /runs/abc<' in html
    assert "no run with id 999" in dashboard.page("/runs/999", status=404)


def test_the_alerts_page_says_it_shows_one_severity_and_its_tabs_keep_it(
    dashboard: Dashboard,
) -> None:
    """The digest links warnings to /alerts?severity=warning. Instead: the page filtered
    without saying so, and its status tabs dropped the severity."""
    seed.alert(dashboard.engine, "warn", severity="warning")
    seed.alert(dashboard.engine, "crit", severity="critical")
    dashboard.login()
    html = dashboard.page("/alerts?severity=warning")
    assert "subject warn" in html and "subject crit" not in html
    assert 'data-testid="alerts-severity">Only warning alerts.' in html
    assert (
        'href="/alerts?status=open&amp;severity=warning" class="" data-testid="status-open"' in html
    )
    assert 'data-testid="alerts-severity"' not in dashboard.page("/alerts")
