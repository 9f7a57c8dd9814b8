# ruff: noqa: F811  (the `site` fixture imported from the module that defines it)
"""What a new user sees after the README walkthrough, in headless Chromium: the short words of
the lineage, run and alert tables (statuses, triggers, kinds) are never split mid-word. The
browser is the session's (tests/browser/conftest.py): a second Playwright in one process
fails ("Sync API inside the asyncio loop")."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from tests.browser.login import log_in
from tests.integration import web_seed as seed
from tests.integration.test_walkthrough_more import TOKEN, Site, site  # noqa: F401

# --- in the browser: short words of a fixed vocabulary are never split mid-word ----------


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
        log_in(page, site.url + "/login", TOKEN)
        split = {}
        for path in pages:
            page.goto(site.url + path)
            page.wait_for_load_state("load")
            split[path] = _words_split(page)
        assert split == {path: [] for path in pages}
    finally:
        context.close()
