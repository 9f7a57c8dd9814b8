"""What a new user sees on the dashboard after the README walkthrough: the events page's
outcome column, over real HTTP (werkzeug on a loopback port), SQLite and PostgreSQL (the
short words of the lineage, run and alert tables in headless Chromium:
tests/browser/test_walkthrough_words.py)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import requests
from flask import Flask
from sqlalchemy import Engine

from service.config import Settings
from service.db import make_engine
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
