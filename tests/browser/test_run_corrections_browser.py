"""A run's corrections in headless Chromium: from the run page's "Corrected" count and its By
code table to the corrections page, its rows (a customer id holding a script tag shown as
text), its filter and its pages. A real run: a failed-records file through a signed event,
the worker, the sandbox's Files API and meters."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from service.config import Settings
from service.db import make_engine
from tests.browser.login import log_in
from tests.conftest import SandboxServer
from tests.integration.test_web_rerun import TOKEN
from tests.integration.test_web_run_corrections import TIMESTAMPS, remediate, service_settings
from tests.servers import serve_wsgi


def test_from_the_run_page_to_its_corrections(
    page: Any,
    artifacts_dir: Path,
    sandbox_server: SandboxServer,
    sqlite_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    settings = service_settings(sandbox_server, sqlite_url, tmp_path, make_settings)
    engine = make_engine(sqlite_url)
    now = int(time.time()) - 60
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    with serve_wsgi(make_app(settings)) as running:
        run, _ = remediate(sandbox_server, running.url, engine, settings, now)
        log_in(page, f"{running.url}/runs/{run.id}", TOKEN)
        page.wait_for_url(f"**/runs/{run.id}")
        assert page.get_by_test_id("count-successes").inner_text() == "500"
        page.get_by_test_id("count-corrected").click()
        page.wait_for_url(f"**/runs/{run.id}/corrections")
        rows = page.get_by_test_id("correction-row")
        assert rows.count() == 50
        first = rows.first
        assert first.get_by_test_id("c-identifier").inner_text() == "m1"
        assert first.get_by_test_id("c-before").inner_text() == "<script>alert(1)</script>"
        assert first.get_by_test_id("c-after").inner_text() == "cus_x"
        assert rows.nth(1).get_by_test_id("c-before").inner_text() == "=cmd()"
        page.screenshot(path=str(artifacts_dir / "run-corrections.png"), full_page=True)

        page.get_by_test_id("next-page").click()
        page.wait_for_url("**/corrections?cursor=*")
        rows = page.get_by_test_id("correction-row")
        assert rows.count() == TIMESTAMPS + 6 - 50
        assert rows.last.get_by_test_id("c-identifier").inner_text() == "—"  # none: last
        assert page.get_by_test_id("next-page").count() == 0

        page.get_by_test_id("filter-identifier").fill("t007")
        page.get_by_test_id("filter-button").click()
        page.wait_for_url("**/corrections?*identifier=t007*")
        [line] = [rows.nth(n).inner_text() for n in range(rows.count())]
        assert "timestamp_ms_to_s" in line and f"{now * 1000}" in line and f"{now}" in line

        # the By code table's corrected number opens that code's corrections
        page.get_by_test_id("corrections-run-link").click()
        page.wait_for_url(f"**/runs/{run.id}")
        by_code = page.get_by_test_id("run-by-code")
        by_code.locator("tr", has_text="meter_event_invalid_value").get_by_test_id(
            "by-code-corrections-link"
        ).click()
        page.wait_for_url("**/corrections?code=meter_event_invalid_value")
        rows = page.get_by_test_id("correction-row")
        assert rows.count() == 1
        assert rows.first.get_by_test_id("c-before").inner_text() == "1,234"
        assert page.get_by_test_id("filter-code").input_value() == "meter_event_invalid_value"
        page.screenshot(path=str(artifacts_dir / "run-corrections-by-code.png"), full_page=True)
    assert dialogs == []  # the script tag never ran
    engine.dispose()
