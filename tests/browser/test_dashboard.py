"""The dashboard in headless Chromium (Playwright): log in, read the overview and its charts,
follow a run's lineage to its objects, filter and download quarantine, replay a dead letter,
acknowledge an alert, and be refused without a token or with a wrong one. A screenshot of
each page is kept under the artifacts directory."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, select

from service.config import Settings
from service.db import make_engine
from service.models import AdminAction, InboxEvent
from tests.browser.login import log_in
from tests.integration import web_seed as seed
from tests.servers import serve_wsgi

TOKEN = "browser-token-0123456789"


@dataclass
class Site:
    url: str
    engine: Engine
    run_id: int
    alert_id: int


@pytest.fixture
def site(
    sqlite_url: str, make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> Iterator[Site]:
    settings = make_settings(
        database_url=sqlite_url,
        mfx_admin_token=TOKEN,
        stripe_api_key="sk_test_browser",
        stripe_webhook_secrets="whsec_test_browser",
    )
    engine = make_engine(sqlite_url)
    key = "import_set:impset_b:file_b"
    run_id = seed.run(engine, key, created_at=seed.datetime.now(seed.UTC))
    seed.import_set(engine, "impset_b", key)
    seed.output(engine, run_id, "corrected", "corrected/impset_b/usage.corrected.mfx1.csv")
    seed.output(engine, run_id, "quarantine", "quarantine/impset_b/usage.quarantine.mfx1.csv", 3)
    seed.bucket_object(engine, "corrected/impset_b/usage.corrected.mfx1.csv")
    seed.quarantined(
        engine,
        run_id,
        [
            {"identifier": "q-1", "code": "no_meter", "meter": "api-cals", "customer": "cus_A"},
            {"identifier": "q-2", "code": "no_meter", "meter": "api-cals", "customer": "cus_B"},
            {
                "identifier": "q-3",
                "code": "meter_event_invalid_value",
                "meter": "api_requests",
                "customer": "cus_A",
                "value": "abc",
            },
        ],
    )
    alert_id = seed.alert(
        engine,
        f"run:{run_id}",
        subject="3 rows quarantined in run",
        links={"run": run_id},
        severity="warning",
    )
    seed.event(engine, "evt_dead_browser", status="dead")
    seed.heartbeat(engine, "host:1:worker", "worker", age_seconds=2)
    with serve_wsgi(make_app(settings)) as server:
        yield Site(server.url, engine, run_id, alert_id)
    engine.dispose()


def _login(page: Any, site: Site, token: str = TOKEN) -> None:
    log_in(page, site.url + "/", token)


def _shot(page: Any, artifacts_dir: Path, name: str) -> None:
    page.screenshot(path=str(artifacts_dir / f"{name}.png"), full_page=True)


def test_refused_without_a_token_or_with_a_wrong_one(
    page: Any, site: Site, artifacts_dir: Path
) -> None:
    page.goto(site.url + "/alerts")
    assert page.get_by_test_id("login-form").is_visible()  # no session: the login form
    _login(page, site, token="not-the-token")
    assert "Wrong token" in page.get_by_test_id("login-error").inner_text()
    _shot(page, artifacts_dir, "login-refused")
    api = page.request.get(site.url + "/api/alerts")
    assert api.status == 401 and "error" in api.json()
    wrong = page.request.get(site.url + "/api/alerts", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401


def test_overview_lineage_quarantine_events_alerts(
    page: Any, site: Site, artifacts_dir: Path
) -> None:
    _login(page, site)
    page.goto(site.url + "/")
    # charts are server-rendered SVG with their data in them
    assert page.locator("[data-testid=chart-rows] svg").count() == 1
    codes_chart = page.locator("[data-testid=chart-codes] svg").inner_html()
    assert "timestamp_in_future" in codes_chart and "no_meter" in codes_chart
    assert page.get_by_test_id("open-alerts-count").inner_text() == "1"
    assert page.get_by_test_id("dead-letters-count").inner_text() == "1"
    assert "evt_dead_browser" in page.get_by_test_id("overview-dead").inner_text()
    assert "ago" in page.get_by_test_id("worker-heartbeat-age").inner_text()
    _shot(page, artifacts_dir, "overview")

    # lineage: the runs list -> the run -> its objects and whether they were imported again
    page.goto(site.url + "/runs")
    _shot(page, artifacts_dir, "runs")
    page.locator(f"a[href='/runs/{site.run_id}']").first.click()
    page.wait_for_url(f"**/runs/{site.run_id}")
    outputs = page.get_by_test_id("run-outputs").inner_text()
    assert "corrected/impset_b/usage.corrected.mfx1.csv" in outputs
    assert "quarantine/impset_b/usage.quarantine.mfx1.csv" in outputs
    assert page.get_by_test_id("count-corrected").inner_text() == "5"
    assert "yes" in page.get_by_test_id("reimport").first.inner_text()
    _shot(page, artifacts_dir, "run")

    # quarantine: filter by code, then download exactly the filtered rows as CSV
    page.get_by_test_id("run-quarantine-link").click()
    page.wait_for_url(f"**/quarantine?*run={site.run_id}*")
    assert page.get_by_test_id("quarantine-row").count() == 3
    page.get_by_test_id("filter-code").fill("no_meter")
    page.get_by_test_id("filter-button").click()
    page.wait_for_url("**/quarantine?*code=no_meter*")
    rows = page.get_by_test_id("quarantine-row")
    assert rows.count() == 2
    assert "reason for q-1" in page.get_by_test_id("quarantine-table").inner_text()
    _shot(page, artifacts_dir, "quarantine")
    with page.expect_download() as download_info:
        page.get_by_test_id("csv-download").click()
    downloaded = Path(download_info.value.path()).read_text(encoding="utf-8")
    records = list(csv.DictReader(io.StringIO(downloaded)))
    assert sorted(r["identifier"] for r in records) == ["q-1", "q-2"]
    assert {r["code"] for r in records} == {"no_meter"}
    assert all(r["reason"].startswith("reason for q-") for r in records)

    # events: replay the dead letter from the page
    page.goto(site.url + "/events?status=dead")
    row = page.locator("[data-event-id=evt_dead_browser]")
    row.get_by_test_id("replay-button").click()
    page.wait_for_load_state()
    _shot(page, artifacts_dir, "events")
    with site.engine.connect() as connection:
        status = connection.execute(
            select(InboxEvent.status).where(InboxEvent.event_id == "evt_dead_browser")  # type: ignore[arg-type]
        ).scalar_one()
    assert status == "pending"

    # alerts: acknowledge from the page; the action is shown on the alert and recorded
    page.goto(site.url + "/alerts")
    alert = page.locator(f"#alert-{site.alert_id}")
    alert.get_by_test_id("ack-button").click()
    page.wait_for_load_state()
    alert = page.locator(f"#alert-{site.alert_id}")
    assert alert.get_by_test_id("alert-status").inner_text() == "acknowledged"
    assert "acknowledge" in alert.get_by_test_id("admin-action").first.inner_text()
    _shot(page, artifacts_dir, "alerts")
    with site.engine.connect() as connection:
        actions = connection.execute(
            select(
                AdminAction.action,
                AdminAction.target_id,
                AdminAction.via,
                AdminAction.source_address,
            )  # type: ignore[call-overload]
        ).all()
    assert ("acknowledge", str(site.alert_id), "dashboard", "127.0.0.1") in actions
    assert ("replay", "evt_dead_browser", "dashboard", "127.0.0.1") in actions


def test_every_page_loads_without_a_failed_request_or_console_error(page: Any, site: Site) -> None:
    """Every page asked the server for `/favicon.ico` (none is served: a 404), which the
    browser's console shows as "Failed to load resource" on each page a user opens."""
    failed: list[str] = []
    page.on(
        "console", lambda message: failed.append(message.text) if message.type == "error" else None
    )
    page.on("requestfailed", lambda request: failed.append(f"failed: {request.url}"))
    page.on(
        "response",
        lambda response: (
            failed.append(f"{response.status}: {response.url}") if response.status >= 400 else None
        ),
    )
    _login(page, site)
    for path in ("/", "/runs", f"/runs/{site.run_id}", "/quarantine", "/events", "/alerts"):
        page.goto(site.url + path)
        page.wait_for_load_state("networkidle")
    assert failed == []


def test_pages_draw_under_their_csp_and_refuse_to_be_framed(page: Any, site: Site) -> None:
    """Any site could show the dashboard in a frame (no X-Frame-Options, no CSP) and have a
    signed-in operator click its buttons. The CSP that now refuses framing and every script
    must leave the pages whole: no violation, the charts drawn."""
    page.add_init_script(
        "window.violations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.violations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    _login(page, site)
    for path in ("/", "/runs", f"/runs/{site.run_id}", "/quarantine", "/events", "/alerts"):
        page.goto(site.url + path)
        page.wait_for_load_state("networkidle")
        assert page.evaluate("window.violations") == [], path
    page.goto(site.url + "/")
    for chart in ("chart-rows", "chart-codes"):
        box = page.get_by_test_id(chart).locator("svg").bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100
    page.set_content(f'<iframe src="{site.url}/alerts" width="800" height="600"></iframe>')
    page.wait_for_timeout(500)
    [framed] = [frame for frame in page.frames if frame != page.main_frame]
    assert framed.query_selector("[data-testid=nav]") is None  # the browser refused it
