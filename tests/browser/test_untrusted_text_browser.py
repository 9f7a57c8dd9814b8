"""Text from a usage file or a Stripe event on the dashboard, as headless Chromium draws it:
markup in a value never runs, and a long unbroken value (an object key, a customer id, a
reason quoting a row) wraps inside its cell instead of widening the page past the screen."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine

from service.config import Settings
from service.db import make_engine
from tests.browser.login import log_in
from tests.integration import web_seed as seed
from tests.servers import serve_wsgi

TOKEN = "browser-untrusted-token-0123456789"
# Each one sets `window.pwned` if the page runs it as markup.
SCRIPT = "<script>window.pwned=1</script>"
IMG = '"><img src=x onerror="window.pwned=1">'
SVG = "</text></svg><svg onload=window.pwned=1><script>window.pwned=1</script>"
LONG = "x" * 600  # no space, no hyphen: nowhere a browser breaks a line by itself


@dataclass
class Site:
    url: str
    engine: Engine
    run_id: int


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
    key = f"import_set:impset_{LONG}:file_b"
    by_code = {f"code{SVG}": {"corrected": 1, "quarantined": 2}, IMG: {"quarantined": 1}}
    now = seed.datetime.now(seed.UTC)
    run_id = seed.run(engine, key, source=f"in/{LONG}{SCRIPT}", by_code=by_code, created_at=now)
    seed.import_set(engine, f"impset_{LONG}", key, source_object=f"usage/{LONG}{IMG}.csv")
    seed.output(engine, run_id, "corrected", f"corrected/{LONG}{SCRIPT}.csv")
    rows = [
        {
            "identifier": f"id-{LONG}",
            "code": f"no_meter{IMG}",
            "meter": f"m{LONG}{SCRIPT}",
            "customer": f"cus_{LONG}{IMG}",
        },
    ]
    seed.quarantined(engine, run_id, rows)
    seed.alert(engine, "long", subject=f"{LONG}{SCRIPT}: gave up", message=f"{LONG}{IMG}")
    seed.event(engine, f"evt_{LONG}{SCRIPT}", status="dead", event_type=f"t{LONG}{IMG}")
    with serve_wsgi(make_app(settings)) as server:
        yield Site(server.url, engine, run_id)
    engine.dispose()


def _login(page: Any, site: Site) -> None:
    log_in(page, site.url + "/", TOKEN)


PAGES = [
    "/",
    "/runs",
    "/runs/{run_id}",
    "/runs?view=import_sets",
    "/quarantine",
    "/events",
    "/alerts",
]


def test_values_from_rows_run_no_markup_and_stay_inside_the_page(
    page: Any, site: Site, artifacts_dir: Path
) -> None:
    """README, dashboard and critical alerts: "an object key or an id is shown as text". The
    markup never ran (the templates escape it), but a 600-character key, customer id, code
    or subject without a space stretched its table column: the page grew wider than the
    screen and every other column was pushed off to the right."""
    _login(page, site)
    too_wide = {}
    for path in PAGES:
        page.goto(site.url + path.format(run_id=site.run_id))
        page.wait_for_load_state("load")
        name = re.sub(r"\W+", "-", path.format(run_id="run")).strip("-") or "overview"
        page.screenshot(path=str(artifacts_dir / f"untrusted-{name}.png"), full_page=True)
        assert page.evaluate("window.pwned") is None, path
        assert page.locator("img[src=x]").count() == 0, path
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > page.viewport_size["width"]:
            too_wide[path] = width
    assert too_wide == {}
