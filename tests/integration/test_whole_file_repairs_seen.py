"""A file Stripe failed as a whole is read repaired; what the repair did is seen.

The repair filled the event name of every row from `default_event_name`, read `;` as the
delimiter and columns under aliases (`time` as `timestamp`): the rows went out so, but the
audit held no line of the filled event names (the meter the row was billed to named by us,
recorded nowhere) and the run, its page and the API said nothing of the repairs. Real wiring:
the sandbox's Files API and meters, a signed event to the running app, the worker, a
`file://` bucket, both databases.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable
from pathlib import Path

import requests
from flask import Flask
from sqlalchemy import Engine
from sqlmodel import Session, select

from sandbox.events import build_import_set_event
from service.config import Settings
from service.db import make_engine
from service.models import Alert, CorrectionAudit, RemediationRun
from service.worker.loop import InboxWorker
from tests.conftest import SandboxServer
from tests.integration.test_web_pages import CSRF
from tests.integration.test_web_rerun import TOKEN, _settings
from tests.servers import serve_wsgi

REPAIRS = [
    "delimiter ';' read as CSV",
    "header aliases renamed: 'time' -> 'timestamp'",
    "event_name filled with 'api_requests'",
]


def test_a_whole_file_repair_is_in_each_rows_audit_and_on_the_run(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    sandbox_server.admin.create_meter("api_requests")
    rules = tmp_path / "rules.toml"
    rules.write_text('[policy]\ndefault_event_name = "api_requests"\n')
    settings = _settings(make_settings, sandbox_server, db_url, mfx_rules=str(rules))
    engine = make_engine(db_url)
    now = int(time.time()) - 60
    content = "identifier;time;payload_stripe_customer_id;payload_value\n"
    content += f"w1;{now};cus_1;5\nw2;{now * 1000};cus_1;7\n"
    with serve_wsgi(make_app(settings)) as running:
        _fail_whole(sandbox_server, running.url, "impset_whole", content)
        InboxWorker(engine, settings).drain()
        run_id = _check_run(engine, now)
        with Session(engine) as session:
            [alert] = session.exec(select(Alert)).all()
        # it said "all 1 rejected rows corrected": every row of the file was re-sent
        assert alert.subject == (
            f"run #{run_id} (import_set.failed): all 2 rejected rows re-sent (1 corrected, "
            "1 unchanged)"
        )
        api = requests.get(
            f"{running.url}/api/runs/{run_id}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert api.json()["repairs"] == REPAIRS
        page = _page(running.url, f"/runs/{run_id}")
    [said] = re.findall(r'data-testid="run-repairs">([^<]*)<', page)
    assert html.unescape(said) == "; ".join(REPAIRS)
    engine.dispose()


def _fail_whole(sandbox: SandboxServer, url: str, import_set: str, content: str) -> None:
    """Stripe fails `content` as a whole: its copy in the Files API, the signed event sent
    to the app at `url`."""
    copy = sandbox.admin.upload_file(content, "daily.csv")
    body = {"id": import_set, "status": "failed", "file": copy["id"]}
    stored = sandbox.admin.add_event(
        build_import_set_event("data_management.import_set.failed", body)
    )
    assert sandbox.admin.deliver(stored["id"], f"{url}/webhooks")["status"] == 200


def _check_run(engine: Engine, now: int) -> int:
    with Session(engine) as session:
        run = session.exec(select(RemediationRun)).one()
        audit = session.exec(select(CorrectionAudit).order_by(CorrectionAudit.id)).all()
    # counts as before: w1's own content passed (valid), w2's timestamp was corrected
    assert (run.input_rows, run.valid, run.corrected, run.quarantined) == (2, 1, 1, 0)
    assert run.repairs == REPAIRS
    lines = [(a.identifier, a.code, a.rule, a.field, a.before, a.after) for a in audit]
    assert lines == [
        ("w1", "rejected", "default_event_name", "event_name", None, "api_requests"),
        ("w2", "timestamp_in_future", "default_event_name", "event_name", None, "api_requests"),
        ("w2", "timestamp_in_future", "timestamp_ms_to_s", "timestamp", str(now * 1000), str(now)),
    ]
    assert run.id is not None
    return run.id


def _page(url: str, path: str) -> str:
    """`path` of the dashboard, logged in with the admin token."""
    browser = requests.Session()
    login = browser.get(f"{url}/login", timeout=10).text
    csrf = CSRF.search(login)
    assert csrf is not None
    form = {"token": TOKEN, "csrf_token": csrf.group(1), "next": "/"}
    assert browser.post(f"{url}/login", data=form, timeout=10).status_code == 200
    response = browser.get(url + path, timeout=10)
    assert response.status_code == 200
    return response.text


def test_a_whole_file_repair_of_valid_rows_alone_is_told(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """A `;` file of valid rows Stripe failed whole: repaired, every row re-sent unchanged,
    and no alert told anyone (a run that corrected or quarantined nothing raised none)."""
    sandbox_server.admin.create_meter("api_requests")
    settings = _settings(make_settings, sandbox_server, db_url)
    engine = make_engine(db_url)
    now = int(time.time()) - 60
    content = "identifier;timestamp;event_name;payload_stripe_customer_id;payload_value\n"
    content += f"v1;{now};api_requests;cus_1;5\n"
    with serve_wsgi(make_app(settings)) as running:
        _fail_whole(sandbox_server, running.url, "impset_semi", content)
        InboxWorker(engine, settings).drain()
    with Session(engine) as session:
        run = session.exec(select(RemediationRun)).one()
        alerts = session.exec(select(Alert)).all()
    assert (run.valid, run.corrected, run.repairs) == (1, 0, ["delimiter ';' read as CSV"])
    assert [(a.severity, a.subject) for a in alerts] == [
        (
            "info",
            f"run #{run.id} (import_set.failed): 1 rejected row re-sent (0 corrected, 1 unchanged)",
        )
    ]
    engine.dispose()
