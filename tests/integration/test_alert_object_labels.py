# ruff: noqa: F811  (the fixture imported from the module that defines it)
"""The alerts page says "object it cannot read" only of an object meterfix could not read.

It said so of every object of a `remediation_input` alert, and an import set's task links
its source object whatever is missing: the poller's failed-records file of
`impset_local_1` gone (`usage/day.csv` itself reads fine), the page said "import set
impset_local_1 object it cannot read usage/day.csv" while the message said to re-import
usage/day.csv. Now an error report's task links the object it could not read as
`unreadable`, and an import set's `objects` are labelled "object". Real worker, a file://
bucket, the dashboard served on a loopback port; SQLite and PostgreSQL.
Failed before: the page held 'object it cannot read' for usage/day.csv."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask

from service.config import Settings
from service.models import Alert
from service.worker.tasks import TaskKind, enqueue_task
from tests.integration import web_seed as seed
from tests.integration.test_remediation_tasks import Service, service  # noqa: F401
from tests.integration.test_report_edges import HEADER, _bucket
from tests.integration.test_web_pages import TOKEN, Dashboard


def test_an_import_set_whose_failed_records_file_is_gone_names_its_object_as_an_object(
    service: Service,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
    tmp_path: Path,
) -> None:
    bucket = _bucket(service)
    (bucket / "usage").mkdir(parents=True, exist_ok=True)
    (bucket / "usage" / "day.csv").write_text(HEADER + f"d1,{int(time.time())},api_requests,x,1\n")
    gone = tmp_path / "work" / "failed" / "impset_local_1.csv"  # never written (or cleared)
    seed.import_set(
        service.engine,
        "impset_local_1",
        "poller:impset_local_1",
        origin="poller",
        source_object="usage/day.csv",
        errors_file_id=None,
        remediation_status="pending",
        detail={"failed_records_path": str(gone)},
    )
    with service.engine.begin() as connection:
        assert enqueue_task(connection, TaskKind.POLLER_ROWS, "impset_local_1")
    service.drain()

    [alert] = [a for a in service.rows(Alert) if a.kind == "remediation_input"]
    assert alert.subject == "poller_rows impset_local_1: cannot remediate usage/day.csv"
    assert alert.message is not None and "re-import the object" in alert.message
    assert alert.links == {"import_set": "impset_local_1", "objects": ["usage/day.csv"]}

    db_url = service.settings.database_url
    with seed.served(db_url, make_settings, make_app, TOKEN) as (url, engine, browser):
        dashboard = Dashboard(url, engine, browser)
        assert dashboard.login().status_code == 302
        html = dashboard.page("/alerts")
    assert "import set impset_local_1" in html
    assert 'object <span class="key" data-testid="alert-object">usage/day.csv</span>' in html
    assert "cannot read" not in html and "corrected <span" not in html
