"""The digest tells new input and quarantine re-runs apart: a real run of a failed-records
file, then re-runs of its quarantined rows queued through the admin API and run by the
worker (the sandbox Stripe, a file:// bucket, SQLite and PostgreSQL); the digest read as
`meterfix digest --dry-run` prints it, as the email (aiosmtpd) and Slack (a webhook receiver)
carry it, and as it is rendered for a window holding the re-run alone.

Before: every run finished in the window was summed. A file of 4 rows (3 quarantined) and two
re-runs of those rows read "Rows in this window (3 runs): 10 received, 1 valid, 1 corrected,
8 quarantined" while 2 rows waited in quarantine: the rows were counted once per re-run that
quarantined them again, taken by a reader for new usage and new problems."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Flask
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from service.config import Settings
from service.db import make_engine
from service.models import RemediationRun
from service.models._types import utcnow
from service.notify.content import collect_digest
from service.notify.render import render_digest
from service.notify.windows import Window
from service.runtime import Runtime
from service.worker.loop import InboxWorker
from service.worker.task_runner import TaskRunner
from tests.conftest import SandboxServer
from tests.integration.notify_helpers import SMTP_PASSWORD, SMTP_USER, SlackReceiver, smtp_server
from tests.integration.test_web_rerun import FAILED, TOKEN, _remediate, _settings
from tests.servers import serve_wsgi

BASE = "https://mfx.example.com"
WAITING = f"{BASE}/quarantine?taken_again=no"
WAITING_LINE = f"Waiting in quarantine now: 2 rows (neither re-run nor sent again since)  {WAITING}"


def _rerun_everything(settings: Settings, engine: Engine, client: Any) -> None:
    """`POST /api/quarantine/rerun` with no filter (every row waiting), run by the worker."""
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    queued = client.post("/api/quarantine/rerun", headers=bearer).get_json()
    assert queued["queued"], queued
    runner = TaskRunner(Runtime(settings, engine=engine))
    assert InboxWorker(engine, settings, task_runner=runner).drain().done == [queued["task"]]


def _reruns(engine: Engine) -> list[RemediationRun]:
    with Session(engine) as session:
        query = select(RemediationRun).where(RemediationRun.trigger == "quarantine_rerun")
        return list(session.exec(query.order_by(col(RemediationRun.id))).all())


def _file_then_two_reruns(
    sandbox: SandboxServer, settings: Settings, engine: Engine, tmp_path: Path, app: Flask
) -> tuple[RemediationRun, list[RemediationRun]]:
    """The file (a1, a2 and a4 quarantined, a3 corrected), a re-run before any fix (all three
    quarantined again), then one after the operator made the missing meter (a4 passes)."""
    sandbox.admin.create_meter("api_requests")
    now = int(time.time())
    first = _remediate(settings, engine, tmp_path, FAILED.format(now=now, ms=now * 1000))
    assert (first.input_rows, first.valid, first.corrected, first.quarantined) == (4, 0, 1, 3)
    client = app.test_client()
    _rerun_everything(settings, engine, client)
    sandbox.admin.create_meter("tokens")
    _rerun_everything(settings, engine, client)
    reruns = _reruns(engine)
    counts = [(r.input_rows, r.valid, r.corrected, r.quarantined) for r in reruns]
    assert counts == [(3, 0, 0, 3), (3, 1, 0, 2)]
    return first, reruns


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def _parts(message: EmailMessage) -> tuple[str, str]:
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and html is not None
    return plain.get_content(), html.get_content().replace("&amp;", "&")


def test_the_digest_counts_new_input_and_reruns_apart_in_every_channel(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """README (Digests): the new input's counts, the re-runs' line (rows tried again, valid,
    corrected, quarantined again, linked to the rows they quarantined again) and the rows
    waiting in quarantine (linked to the quarantine page's `taken_again=no`), the same in the
    dry run, the email's text and HTML, and Slack."""
    receiver = SlackReceiver()
    with smtp_server() as (mailbox, port), serve_wsgi(receiver) as slack:
        settings = _settings(
            make_settings,
            sandbox_server,
            db_url,
            mfx_public_url=BASE,
            smtp_url=f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{port}",
            digest_email_to="ops@example.com",
            slack_webhook_url=f"{slack.url}/services/T/B/X",
        )
        engine = make_engine(db_url)
        app = make_app(settings)
        first, reruns = _file_then_two_reruns(sandbox_server, settings, engine, tmp_path, app)
        dry = app.test_cli_runner().invoke(args=["digest", "--dry-run", "--since", "1h"])
        sent = app.test_cli_runner().invoke(args=["digest", "--since", "1h"])
        engine.dispose()
    assert dry.exit_code == 0 and sent.exit_code == 0, (dry.output, sent.output)
    again = f"{BASE}/quarantine?" + urlencode({"run": ",".join(str(r.id) for r in reruns)})
    new_input = "New input in this window (1 run): 4 received, 0 valid, 1 corrected, 3 quarantined"
    rerun_line = (
        "Re-runs of quarantined rows (2 runs, not counted above): 6 rows tried again: "
        f"1 valid, 0 corrected, 5 quarantined again  {again}"
    )
    [(_, _, message)] = mailbox.received
    plain, html = _parts(message)
    for text in (dry.output, plain):
        lines = _lines(text)
        assert new_input in lines and rerun_line in lines and WAITING_LINE in lines, text
        previous = "Previous window: 0 received, 0 valid, 0 corrected, 0 quarantined (+4 received)"
        assert previous in lines
        # the file's rows by code, each once (before: the re-runs' too, "3 quarantined")
        start = lines.index("By error code:") + 1
        assert lines[start : start + 4] == [
            f"meter_event_customer_not_found: 0 corrected, 1 quarantined (+1 vs previous window)"
            f"  {BASE}/quarantine?code=meter_event_customer_not_found&run={first.id}",
            "no_meter: 0 corrected, 1 quarantined (+1 vs previous window)"
            f"  {BASE}/quarantine?code=no_meter&run={first.id}",
            "timestamp_in_future: 1 corrected, 0 quarantined (+1 vs previous window)",
            "timestamp_too_far_in_past: 0 corrected, 1 quarantined (+1 vs previous window)"
            f"  {BASE}/quarantine?code=timestamp_too_far_in_past&run={first.id}",
        ]
        groups = [line for line in lines if re.match(r"\w+ / \w+ / [\w-]+: ", line)]
        assert [line.split("  ")[0] for line in groups] == [
            "meter_event_customer_not_found / api_requests / acme-42: 1 row",
            "no_meter / tokens / cus_1: 1 row",
            "timestamp_too_far_in_past / api_requests / cus_1: 1 row",
        ]
    assert message["Subject"].endswith(": 1 corrected, 3 quarantined, 2 re-runs")
    assert "New input in this window (1 run)" in html and f'href="{again}"' in html
    assert "6 rows tried again: 1 valid, 0 corrected, 5 quarantined again" in html
    waiting_link = f'<a href="{WAITING}" style="color:#1a5fb4;">Waiting in quarantine now</a>'
    assert f"{waiting_link}: 2 rows" in html
    [body] = receiver.bodies
    blocks = body["blocks"]
    assert blocks[1]["text"]["text"] == "*New input* (1 run; re-runs of quarantined rows apart)"
    assert [f["text"] for f in blocks[1]["fields"]] == [
        "*Received*\n4 (+4)",
        "*Valid*\n0 (+0)",
        "*Corrected*\n1 (+1)",
        "*Quarantined*\n3 (+3)",
    ]
    texts = "\n".join(b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b)
    assert (
        f"*<{again}|Re-runs of quarantined rows>* (2 runs, not counted above): 6 rows tried "
        "again: 1 valid, 0 corrected, 5 quarantined again" in texts
    )
    assert f"• <{WAITING}|Waiting in quarantine now>: 2 rows" in texts


def test_a_window_of_a_rerun_alone_is_sent_and_counts_no_new_input(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """The file and the first re-run finish in the previous window, the second re-run in
    this one: this window's new input is none (its change against the previous window says
    so), its error codes list nothing new, and it is sent for its re-run. Before: the re-run
    was new input, "3 received, 1 valid, 0 corrected, 2 quarantined", with its codes."""
    settings = _settings(make_settings, sandbox_server, db_url, mfx_public_url=BASE)
    engine = make_engine(db_url)
    app = make_app(settings)
    sandbox_server.admin.create_meter("api_requests")
    now = int(time.time())
    _remediate(settings, engine, tmp_path, FAILED.format(now=now, ms=now * 1000))
    client = app.test_client()
    _rerun_everything(settings, engine, client)
    middle = utcnow()
    sandbox_server.admin.create_meter("tokens")
    _rerun_everything(settings, engine, client)
    window = Window(middle, middle + timedelta(hours=1))  # the previous hour: the rest
    digest = collect_digest(engine, window, public_url=BASE, examples=True)
    text = render_digest(digest, now=window.end).text
    second = _reruns(engine)[-1]
    engine.dispose()
    assert not digest.empty
    lines = _lines(text)
    none = "New input in this window (0 runs): 0 received, 0 valid, 0 corrected, 0 quarantined"
    assert none in lines
    assert "Previous window: 4 received, 0 valid, 1 corrected, 3 quarantined (-4 received)" in lines
    assert (
        "Re-runs of quarantined rows (1 run, not counted above): 3 rows tried again: "
        f"1 valid, 0 corrected, 2 quarantined again  {BASE}/quarantine?run={second.id}" in lines
    )
    assert WAITING_LINE in lines
    assert "By error code" not in text and "Quarantined by code" not in text
    assert f"#{second.id} quarantine_rerun" in text  # the runs list names every run
