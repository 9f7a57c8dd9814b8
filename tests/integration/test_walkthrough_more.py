"""What a new user sees on the dashboard after the README walkthrough: the events page's
outcome column and the short words of the lineage, run and alert tables, over real HTTP
(werkzeug on a loopback port), SQLite and PostgreSQL, and in headless Chromium."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import Engine

from service.config import Settings
from service.db import make_engine
from tests.browser.conftest import CHROMIUM_ARGS, chromium_path
from tests.integration import web_seed as seed
from tests.servers import serve_wsgi

TOKEN = "walkthrough-more-token-0123"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
ROW = re.compile(r'<tr data-testid="event-row"[^>]*data-event-id="([^"]+)">(.*?)</tr>', re.S)


@dataclass
class Site:
    url: str
    engine: Engine


@pytest.fixture
def site(
    db_url: str, make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> Iterator[Site]:
    settings = make_settings(
        database_url=db_url,
        mfx_admin_token=TOKEN,
        stripe_api_key="sk_test_walkthrough",
        stripe_webhook_secrets="whsec_test_walkthrough",
    )
    engine = make_engine(db_url)
    with serve_wsgi(make_app(settings)) as server:
        yield Site(server.url, engine)
    engine.dispose()


def _logged_in(site: Site) -> requests.Session:
    session = requests.Session()
    csrf = CSRF.search(session.get(site.url + "/login", timeout=10).text)
    assert csrf is not None
    form = {"token": TOKEN, "csrf_token": csrf.group(1)}
    assert session.post(site.url + "/login", data=form, allow_redirects=False).status_code == 302
    return session


def _outcome_cells(html: str) -> dict[str, str]:
    """Each event row's "Last error / outcome" cell (the sixth), markup included."""
    cells = {}
    for event_id, row in ROW.findall(html):
        tds = re.findall(r"<td[^>]*>.*?</td>", row, re.S)
        cells[event_id] = tds[5]
    return cells


def test_events_page_shows_a_done_events_outcome_not_its_old_error_in_red(site: Site) -> None:
    """A webhook whose first attempt failed (the sandbox or Stripe down a moment) and whose
    retry worked keeps `last_error` (`mark_done` leaves it), so the events page showed the
    old failure, in the error colour, for an event that is done; and every done event's
    outcome ("remediated …", "recorded: …") was drawn in red too, as if it had failed."""
    seed.event(
        site.engine,
        "evt_retried_ok",
        status="done",
        attempts=2,
        last_error="APIConnectionError: connection refused",
        outcome="recorded: 1 error (no_meter), remediation queued",
    )
    seed.event(site.engine, "evt_first_time", status="done", outcome="remediated 3 row(s)")
    seed.event(site.engine, "evt_dead", status="dead", last_error="StripeError: boom")
    html = _logged_in(site).get(site.url + "/events", timeout=10).text
    cells = _outcome_cells(html)

    assert "recorded: 1 error (no_meter), remediation queued" in cells["evt_retried_ok"]
    assert "connection refused" not in cells["evt_retried_ok"]
    assert 'class="err"' not in cells["evt_retried_ok"]
    assert "remediated 3 row(s)" in cells["evt_first_time"]
    assert 'class="err"' not in cells["evt_first_time"]
    assert "StripeError: boom" in cells["evt_dead"] and 'class="err"' in cells["evt_dead"]


# --- in the browser: short words of a fixed vocabulary are never split mid-word ----------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def _seed_walkthrough_runs(engine: Engine) -> int:
    """The demo's lineage as the README walkthrough leaves it: a poller run, an error
    report's run, a triggered import set's run, with long identifiers beside short words."""
    report = "evt_test_6FVPwOTraL2clOd97ClG44Yqkh3yKNROIIqX1baN"
    seed.run(engine, "poller:impset_local_0023f78559889df4a4bbdc05", trigger="poller")
    seed.run(engine, f"error_report:{report}:demo.csv", trigger="error_report")
    run_key = "import_set:impset_test_TXWmMN7LOX7n4T6kNopt6A5m:file_test_S"
    run_id = seed.run(engine, run_key)
    seed.import_set(
        engine, "impset_test_TXWmMN7LOX7n4T6kNopt6A5m", run_key, status="succeeded_with_errors"
    )
    long_key = f"corrected/report-{report}/demo-1796509060.corrected.r1.csv"
    seed.output(engine, run_id, "corrected", long_key)
    seed.alert(engine, "a1", severity="warning", status="acknowledged")
    seed.event(engine, f"mfx_task_error_report_{report}", status="processing")
    return run_id


PAGES = ["/runs", "/runs?view=import_sets", "/runs/{run_id}", "/alerts", "/events"]


# Statuses, triggers and kinds meterfix writes itself, as the walkthrough shows them.
WORDS = [
    "poller",
    "error_report",
    "import_set.succeeded",
    "done",
    "corrected",
    "acknowledged",
    "processing",
]


def _words_split(page: Any) -> list[str]:
    """The cells holding one of WORDS alone whose text takes more than one line."""
    script = """words => [...document.querySelectorAll('td')]
        .filter(td => words.includes(td.textContent.trim()))
        .filter(td => {
            const range = document.createRange();
            range.selectNodeContents(td);
            const lines = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
            return lines.size > 1;
        })
        .map(td => td.textContent.trim())"""
    return list(page.evaluate(script, WORDS))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_status_trigger_and_kind_words_stay_whole_in_their_cells(site: Site, browser: Any) -> None:
    """README walkthrough, dashboard: the lineage page showed `import_set.succeede` / `d`,
    the error reports' status `unmatche` / `d` and `remediate` / `d`, the run page's kind
    `correcte` / `d`: `td { overflow-wrap: anywhere }` (there so a long key wraps) lets the
    table squeeze any column to its narrowest letter, short words of our own included."""
    run_id = _seed_walkthrough_runs(site.engine)
    pages = [path.format(run_id=run_id) for path in PAGES]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(site.url + "/login")
        page.get_by_test_id("token-input").fill(TOKEN)
        page.get_by_test_id("login-button").click()
        page.wait_for_load_state()
        split = {}
        for path in pages:
            page.goto(site.url + path)
            page.wait_for_load_state("load")
            split[path] = _words_split(page)
        assert split == {path: [] for path in pages}
    finally:
        context.close()
