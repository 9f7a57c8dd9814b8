"""What people see of a run once its quarantined rows are taken again: its alert (`run:<run
key>`) is resolved once none of its rows waits (a quarantine re-run took them, or the poller
sent them again from a later version of their file), its text counts the rows taken and
waiting while some do, its "resolved" message and the digest say so; the run's page and
`/api/runs/<id>` say which re-runs took its rows and how many still wait. Real parts: the
sandbox's meters, a file:// bucket, the worker running the re-run task, the dashboard over
HTTP, a Slack receiver; SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import requests
from flask import Flask
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from service.adapters.slack import SlackChannel
from service.config import Settings
from service.db import make_engine
from service.jobs.store.rerun_takes import mark_rerun_in
from service.models import Alert, QuarantinedRow, RemediationRun
from service.models._types import utcnow
from service.notify.content import collect_digest
from service.notify.critical import send_critical_alerts
from service.notify.render import render_digest
from service.notify.runs import settle_alerts_of_rows
from service.notify.windows import Window
from service.poller.passes import run_poll_pass
from service.runtime import Runtime
from service.worker.loop import InboxWorker
from service.worker.task_runner import TaskRunner
from service.worker.tasks import TaskKind
from tests.conftest import SandboxServer
from tests.integration.notify_helpers import SlackReceiver
from tests.integration.test_billing_safety import (  # noqa: F401 (`loop`: a fixture)
    a_row_stripe_refused,
    bundled_poller,
    loop,
    usage_csv,
)
from tests.integration.test_e2e import Loop, _put
from tests.integration.test_web_rerun import FAILED, HEADER, TOKEN, _remediate, _settings
from tests.servers import serve_wsgi

BEARER = {"Authorization": f"Bearer {TOKEN}"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
FIRST_KEY = "run:import_set:impset_q:file_q"  # `_remediate`'s run


def _first_run(
    sandbox: SandboxServer, settings: Settings, engine: Engine, tmp_path: Path
) -> RemediationRun:
    """The run of FAILED: a1 (a customer no rule maps), a2 (too far in the past) and a4 (a
    meter Stripe lacks) quarantined, a3 corrected; its warning alert open."""
    sandbox.admin.create_meter("api_requests")
    now = int(time.time())
    first = _remediate(settings, engine, tmp_path, FAILED.format(now=now, ms=now * 1000))
    assert (first.corrected, first.quarantined) == (1, 3)
    return first


def _fix_rules(sandbox: SandboxServer, settings: Settings) -> None:
    """The operator's fixes: a customer map entry for a1, the meter a4 names."""
    Path(settings.mfx_rules).write_text('[customers]\n"acme-42" = "cus_acme"\n')
    sandbox.admin.create_meter("tokens")


def _rerun(client: Any, settings: Settings, engine: Engine, query: str) -> RemediationRun:
    """Queue a re-run of `query`'s rows, run its task; the re-run's (one) run."""
    queued = client.post(f"/api/quarantine/rerun?{query}", headers=BEARER).get_json()
    assert queued["queued"], queued
    worker = InboxWorker(engine, settings, task_runner=TaskRunner(Runtime(settings, engine=engine)))
    assert worker.drain().done == [queued["task"]]
    with Session(engine) as session:
        return session.exec(
            select(RemediationRun)
            .where(RemediationRun.trigger == "quarantine_rerun")
            .order_by(col(RemediationRun.id).desc())
        ).first()  # type: ignore[return-value]


def _alert(engine: Engine, key: str) -> Alert:
    with Session(engine) as session:
        return session.exec(select(Alert).where(Alert.alert_key == key)).one()


@contextmanager
def _browser(app: Flask) -> Iterator[tuple[str, requests.Session]]:
    """The dashboard on a loopback port, logged in."""
    with serve_wsgi(app) as server, requests.Session() as browser:
        found = CSRF.search(browser.get(server.url + "/login", timeout=10).text)
        assert found is not None
        form = {"token": TOKEN, "csrf_token": found.group(1)}
        login = browser.post(server.url + "/login", data=form, allow_redirects=False, timeout=10)
        assert login.status_code == 302
        yield server.url, browser


def _taken_line(url: str, browser: requests.Session, run_id: int) -> str:
    """The run page's line on its rows taken again, as text (its links' hrefs kept apart)."""
    page = browser.get(f"{url}/runs/{run_id}", timeout=10)
    assert page.status_code == 200
    found = re.search(r'<p data-testid="run-taken-again">(.*?)</p>', page.text, re.S)
    assert found is not None, page.text[:3000]
    return " ".join(re.sub(r"<[^>]+>", "", found.group(1)).split())


def _hrefs(url: str, browser: requests.Session, run_id: int) -> list[str]:
    page = browser.get(f"{url}/runs/{run_id}", timeout=10).text
    return re.findall(r'<a href="([^"]+)" data-testid="taken-by-run">', page)


def test_a_rerun_that_takes_every_row_of_a_run_resolves_its_alert_and_its_page_says_by_whom(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """The run's warning alert ("3 rows quarantined") stayed open once a re-run had taken
    all three (two now pass, one quarantined again under the re-run's own alert): the
    dashboard and digests said rows were still waiting. Now it is resolved, saying what took
    them; the run page links the re-run; the digest lists the alert resolved."""
    rules = tmp_path / "rules.toml"
    rules.write_text("[policy]\n")
    settings = _settings(make_settings, sandbox_server, db_url, mfx_rules=str(rules))
    engine = make_engine(db_url)
    start = utcnow() - timedelta(minutes=1)
    first = _first_run(sandbox_server, settings, engine, tmp_path)
    assert _alert(engine, FIRST_KEY).status == "open"
    app = make_app(settings)
    with _browser(app) as (url, browser):
        line = _taken_line(url, browser, first.id)  # type: ignore[arg-type]
    assert line == "None of its 3 quarantined rows was taken again yet: 3 still waiting."

    _fix_rules(sandbox_server, settings)
    client = app.test_client()
    rerun = _rerun(client, settings, engine, f"run={first.id}")
    assert (rerun.valid + rerun.corrected, rerun.quarantined) == (2, 1)

    alert = _alert(engine, FIRST_KEY)
    assert (alert.status, alert.count, alert.severity) == ("resolved", 1, "warning")
    assert alert.resolved_at is not None
    assert alert.subject == (
        f"run #{first.id} (import_set.succeeded): 3 rows quarantined; all 3 taken again"
    )
    assert alert.message == (
        "4 rows received: 0 valid, 1 corrected, 3 quarantined; source file_q\n"
        "Quarantined rows: 3 codes (meter_event_customer_not_found 1 row, no_meter 1 row, "
        "timestamp_too_far_in_past 1 row), 2 meters, 2 customers.\n"
        f"Taken again since: 3 of its 3 quarantined rows, by run #{rerun.id} (3 rows); "
        "none waiting. Rows a re-run quarantined again wait under its own run's alert."
    )
    own = _alert(engine, f"run:{rerun.run_key}")  # a2, quarantined again: still waiting
    assert (own.status, own.subject) == (
        "open",
        f"run #{rerun.id} (quarantine_rerun): 1 row quarantined",
    )

    with _browser(app) as (url, browser):
        line = _taken_line(url, browser, first.id)  # type: ignore[arg-type]
        hrefs = _hrefs(url, browser, first.id)  # type: ignore[arg-type]
        assert browser.get(url + hrefs[0], timeout=10).status_code == 200
        rerun_line = _taken_line(url, browser, rerun.id)  # type: ignore[arg-type]
    assert line == (
        f"All 3 of its quarantined rows were taken again: by run #{rerun.id} (3 rows); "
        "none waiting."
    )
    assert hrefs == [f"/runs/{rerun.id}"]
    assert rerun_line == "None of its 1 quarantined row was taken again yet: 1 still waiting."
    detail = client.get(f"/api/runs/{first.id}", headers=BEARER).get_json()
    assert detail["quarantine_taken"] == {
        "quarantined": 3,
        "taken": 3,
        "waiting": 0,
        "reruns": [{"run_id": rerun.id, "rows": 3}],
        "elsewhere": 0,
    }

    digest = collect_digest(
        engine, Window(start, utcnow() + timedelta(minutes=1)), public_url=url, examples=True
    )
    text = render_digest(digest).text
    assert (
        f"[resolved] remediation.run: run #{first.id} (import_set.succeeded): 3 rows "
        "quarantined; all 3 taken again (x1)"
    ) in text, text
    assert f"[open] remediation.run: run #{rerun.id} (quarantine_rerun): 1 row quarantined" in text

    # the task run again (a crash after its run was recorded): nothing changes
    action = rerun.run_key.split(":")[1]
    outcome = TaskRunner(Runtime(settings, engine=engine))(TaskKind.QUARANTINE_RERUN, action)
    assert outcome.startswith("no quarantined rows to re-run"), outcome
    again = _alert(engine, FIRST_KEY)
    assert (again.status, again.count, again.resolved_at, again.message) == (
        "resolved",
        1,
        alert.resolved_at,
        alert.message,
    )
    engine.dispose()


def test_a_run_alert_counts_the_rows_still_waiting_until_the_last_is_taken(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """A re-run of one code takes one of the run's three rows: its alert stays open, saying
    1 of 3 taken and 2 still waiting (it said "3 rows quarantined", and the dashboard showed
    three waiting); the run page names the re-run and the two waiting. A second re-run takes
    the rest: resolved, both re-runs named."""
    rules = tmp_path / "rules.toml"
    rules.write_text("[policy]\n")
    settings = _settings(make_settings, sandbox_server, db_url, mfx_rules=str(rules))
    engine = make_engine(db_url)
    first = _first_run(sandbox_server, settings, engine, tmp_path)
    _fix_rules(sandbox_server, settings)
    app = make_app(settings)
    client = app.test_client()

    one = _rerun(client, settings, engine, "code=no_meter")  # a4 alone
    assert (one.input_rows, one.quarantined) == (1, 0)
    alert = _alert(engine, FIRST_KEY)
    assert (alert.status, alert.count) == ("open", 1)
    assert alert.subject == (
        f"run #{first.id} (import_set.succeeded): 3 rows quarantined; "
        "1 of 3 taken again, 2 still waiting"
    )
    assert alert.message.endswith(
        f"\nTaken again since: 1 of its 3 quarantined rows, by run #{one.id} (1 row); "
        "2 still waiting. Rows a re-run quarantined again wait under its own run's alert."
    )
    with _browser(app) as (url, browser):
        line = _taken_line(url, browser, first.id)  # type: ignore[arg-type]
    assert line == (
        f"1 of its 3 quarantined rows was taken again: by run #{one.id} (1 row); 2 still waiting."
    )

    two = _rerun(client, settings, engine, f"run={first.id}")  # a1 and a2
    alert = _alert(engine, FIRST_KEY)
    assert (alert.status, alert.count) == ("resolved", 1)
    assert alert.subject == (
        f"run #{first.id} (import_set.succeeded): 3 rows quarantined; all 3 taken again"
    )
    assert alert.message.endswith(
        f"\nTaken again since: 3 of its 3 quarantined rows, by run #{one.id} (1 row), "
        f"by run #{two.id} (2 rows); none waiting. Rows a re-run quarantined again wait "
        "under its own run's alert."
    )
    with _browser(app) as (url, browser):
        line = _taken_line(url, browser, first.id)  # type: ignore[arg-type]
        hrefs = _hrefs(url, browser, first.id)  # type: ignore[arg-type]
    assert line == (
        f"All 3 of its quarantined rows were taken again: by run #{one.id} (1 row), "
        f"by run #{two.id} (2 rows); none waiting."
    )
    assert hrefs == [f"/runs/{one.id}", f"/runs/{two.id}"]
    engine.dispose()


def test_a_critical_run_alert_resolved_by_a_rerun_sends_a_resolved_message_saying_so(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """Past MFX_QUARANTINE_ALERT_ROWS the run's alert is critical: its "raised" message went
    to Slack, and once a re-run took every row no "resolved" one followed (the alert stayed
    open). Now it does, saying what took them."""
    receiver = SlackReceiver()
    rules = tmp_path / "rules.toml"
    rules.write_text("[policy]\n")
    with serve_wsgi(receiver) as slack:
        hook = f"{slack.url}/services/T/B/X"
        settings = _settings(
            make_settings,
            sandbox_server,
            db_url,
            mfx_rules=str(rules),
            mfx_quarantine_alert_rows="3",
            slack_webhook_url=hook,
        )
        engine = make_engine(db_url)
        first = _first_run(sandbox_server, settings, engine, tmp_path)
        assert _alert(engine, FIRST_KEY).severity == "critical"
        assert send_critical_alerts(engine, settings, [SlackChannel(hook)]) == 1
        _fix_rules(sandbox_server, settings)
        rerun = _rerun(make_app(settings).test_client(), settings, engine, f"run={first.id}")
        sent = send_critical_alerts(engine, settings, [SlackChannel(hook)])
    assert sent == 1
    texts = [str(body.get("text", "")) for body in receiver.bodies]
    assert texts[-1] == (
        f"Resolved: run #{first.id} (import_set.succeeded): 3 rows quarantined "
        "(threshold 3); all 3 taken again"
    ), texts
    resolved = str(receiver.bodies[-1])
    assert f"by run #{rerun.id} (3 rows); none waiting" in resolved, resolved
    with Session(engine) as session:
        rows = session.exec(select(QuarantinedRow).where(QuarantinedRow.run_id == first.id)).all()
    assert {row.rerun_id for row in rows} == {rerun.id}
    engine.dispose()


def test_a_run_alert_is_resolved_when_the_poller_sends_its_row_again_fixed_by_hand(
    loop: Loop,  # noqa: F811 (the fixture imported above)
    make_app: Callable[[Settings], Flask],
) -> None:
    """The poller sent `g`, Stripe refused it (a customer it does not know) and meterfix
    quarantined it: a warning alert for the run of Stripe's report. The customer fixed the
    row and uploaded the file again; the poller sent it and Stripe acknowledged it, marking
    the entry taken again: the alert stayed open, one row "quarantined" though none waited.
    Now it is resolved once the import is done, and the run's page says it."""
    with bundled_poller(loop) as deps:
        other, row = a_row_stripe_refused(loop, deps)
        with Session(loop.engine) as session:
            [held] = session.exec(select(QuarantinedRow)).all()
            run = session.get(RemediationRun, held.run_id)
        assert run is not None
        key = f"run:{run.run_key}"
        assert _alert(loop.engine, key).status == "open"
        time.sleep(1)
        _put(loop, "day.csv", usage_csv([other, [*row[:3], "cus_alice", row[4]]]))
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "g"]
    with Session(loop.engine) as session:
        marked = session.get(QuarantinedRow, held.id)
        assert marked is not None and marked.taken_again is not None
    alert = _alert(loop.engine, key)
    assert (alert.status, alert.count) == ("resolved", 1)
    assert alert.subject.endswith("1 row quarantined; taken again"), alert.subject
    assert alert.message.endswith(
        "\nTaken again since: its quarantined row, by a later version of their file "
        "or another take (1 row, marked); none waiting."
    ), alert.message
    app = make_app(loop.settings.model_copy(update={"mfx_admin_token": TOKEN}))
    with _browser(app) as (url, browser):
        line = _taken_line(url, browser, run.id)  # type: ignore[arg-type]
        detail = browser.get(f"{url}/api/runs/{run.id}", headers=BEARER, timeout=10).json()
    assert line == (
        "Its quarantined row was taken again: by a later version of their file or "
        "another take (1 row, marked taken again); none waiting."
    )
    assert detail["quarantine_taken"] == {
        "quarantined": 1,
        "taken": 1,
        "waiting": 0,
        "reruns": [],
        "elsewhere": 1,
    }


def test_two_transactions_taking_the_last_rows_of_a_run_at_once_resolve_its_alert(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
) -> None:
    """A re-run takes two of a run's rows while another transaction (the poller marking the
    third taken again) takes the last one: each counted the rows before the other committed,
    so each saw one still waiting and the alert stayed open with none waiting. The second now
    counts once the first has committed (the alert's row is locked while they count)."""
    settings = _settings(make_settings, sandbox_server, db_url)
    engine = make_engine(db_url)
    first = _first_run(sandbox_server, settings, engine, tmp_path)
    with Session(engine) as session:
        ids = [
            int(row.id)  # type: ignore[arg-type]
            for row in session.exec(
                select(QuarantinedRow)
                .where(QuarantinedRow.run_id == first.id)
                .order_by(col(QuarantinedRow.id))
            )
        ]
    second: list[BaseException] = []

    def the_other() -> None:
        try:
            with engine.begin() as connection:
                mark_rerun_in(connection, ids[2:], 9_002)
                settle_alerts_of_rows(connection, ids[2:])
        except BaseException as exc:
            second.append(exc)

    with engine.begin() as connection:
        mark_rerun_in(connection, ids[:2], 9_001)
        settle_alerts_of_rows(connection, ids[:2])
        other = threading.Thread(target=the_other)
        other.start()
        time.sleep(0.5)  # the other transaction counts now, before this one commits
    other.join(20)
    assert not other.is_alive() and not second, second
    alert = _alert(engine, FIRST_KEY)
    assert (alert.status, alert.subject) == (
        "resolved",
        f"run #{first.id} (import_set.succeeded): 3 rows quarantined; all 3 taken again",
    )
    engine.dispose()


def test_a_rerun_that_leaves_a_row_taken_elsewhere_resolves_its_runs_alert(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """A later run quarantined the same row again (a copy of the file): the first run's
    entry is marked taken again when that run ends (that newer entry is the one to re-run),
    so a re-run of the first run's rows has none to take. Nothing of the first run waits any
    more: its alert is resolved, saying so."""
    sandbox_server.admin.create_meter("api_requests")
    settings = _settings(make_settings, sandbox_server, db_url)
    engine = make_engine(db_url)
    row = f"{HEADER}b1,{int(time.time())},tokens,cus_1,3,no_meter\n"
    first = _remediate(settings, engine, tmp_path, row)
    copy = _remediate(settings, engine, tmp_path, row, key="file_copy")
    assert (first.quarantined, copy.quarantined) == (1, 1)
    client = make_app(settings).test_client()
    queued = client.post(f"/api/quarantine/rerun?run={first.id}", headers=BEARER).get_json()
    assert not queued["queued"] and queued["rows"] == 0
    alert = _alert(engine, FIRST_KEY)
    assert (alert.status, alert.subject) == (
        "resolved",
        f"run #{first.id} (import_set.succeeded): 1 row quarantined; taken again",
    )
    assert alert.message.endswith(
        "\nTaken again since: its quarantined row, by a later version of their file "
        "or another take (1 row, marked); none waiting."
    ), alert.message
    assert _alert(engine, "run:import_set:impset_q:file_copy").status == "open"
    engine.dispose()
