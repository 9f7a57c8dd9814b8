"""The quarantine page's forms in headless Chromium: typing a customer with a zero-width
non-joiner (Persian `علی‌رضا`) or a zero-width space into the filter box, pressing Filter,
then "Re-run with current rules" re-runs that customer's row. The re-run form's hidden
filter held `علی[U+200C]رضا`, the code point as the page shows it to people: "No quarantined
rows match this filter: nothing queued"; pressing Filter again searched for that spelling."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from service.config import Settings
from service.db import make_engine
from service.models import AdminAction
from tests.browser.login import log_in
from tests.integration import web_seed as seed
from tests.servers import serve_wsgi

TOKEN = "browser-form-values-token-0123456789"
PERSIAN = "\u0639\u0644\u06cc\u200c\u0631\u0636\u0627"  # علی‌رضا


@dataclass
class Site:
    url: str
    engine: Engine


@pytest.fixture
def site(
    sqlite_url: str, make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> Iterator[Site]:
    settings = make_settings(database_url=sqlite_url, mfx_admin_token=TOKEN)
    engine = make_engine(sqlite_url)
    run_id = seed.run(engine, "import_set:impset_a:file_a")
    customers = [
        "cus_1",
        "cus_1\u200b",
        "cus_1\u200f",
        PERSIAN,
        "\u0639\u0644\u06cc\u0631\u0636\u0627",
    ]
    rows = [
        {"identifier": f"r{n}", "code": "no_meter", "customer": c} for n, c in enumerate(customers)
    ]
    seed.quarantined(engine, run_id, rows)
    with serve_wsgi(make_app(settings)) as server:
        yield Site(server.url, engine)
    engine.dispose()


@pytest.mark.parametrize(
    "customer", [PERSIAN, "cus_1\u200b", "cus_1\u200f"], ids=["zwnj", "zwsp", "rlm"]
)
def test_filter_then_rerun_takes_the_customers_row(
    page: Any, site: Site, customer: str, artifacts_dir: Path
) -> None:
    log_in(page, site.url + "/quarantine", TOKEN)
    page.get_by_test_id("filter-customer").fill(customer)
    with page.expect_navigation():
        page.get_by_test_id("filter-button").click()
    assert page.get_by_test_id("quarantine-row").count() == 1
    with page.expect_navigation():  # Filter again: the box holds what was typed
        page.get_by_test_id("filter-button").click()
    assert page.get_by_test_id("filter-customer").input_value() == customer
    assert page.get_by_test_id("quarantine-row").count() == 1
    with page.expect_navigation():
        page.get_by_test_id("rerun-button").click()
    page.screenshot(path=str(artifacts_dir / f"form-values-{ord(customer[-1]):x}.png"))
    flashed = page.get_by_test_id("flash").all_inner_texts()
    assert not [text for text in flashed if "nothing queued" in text], flashed
    with Session(site.engine) as session:
        actions = session.exec(select(AdminAction).order_by(col(AdminAction.id))).all()
        assert [(a.target_id, a.detail["rows"]) for a in actions] == [(f"customer={customer}", 1)]
