"""What waits in quarantine is what a re-run would take: a row the poller sent since from
another file (the quarantine file fixed by hand and uploaded under a new name) and the older
entry of a row another run quarantined again since are marked taken again when that happens,
not listed as waiting (`taken_again=no`, the digest's "Waiting in quarantine now", a run's
alert) until a re-run's pick leaves them. A run's alert names a code, meter or customer only
when all its quarantined rows share it. Real parts: the sandbox, a moto S3 bucket or a
file:// one, the bundled poller, the worker, the dashboard's API over HTTP; SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import requests
from flask import Flask
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from service.config import Settings
from service.db import make_engine
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.jobs.store.rerun_queue import count_quarantine
from service.jobs.store.taken_again import mark_rows_taken_again
from service.models import Alert, QuarantinedRow, RemediationRun
from service.notify.runs import settle_alerts_of_rows
from service.poller.passes import run_poll_pass
from tests.conftest import SandboxServer
from tests.integration.test_billing_safety import (  # noqa: F401 (`loop`: a fixture)
    a_row_the_poller_refused,
    bundled_poller,
    loop,
    usage_csv,
)
from tests.integration.test_e2e import Loop, _put
from tests.integration.test_web_rerun import HEADER, TOKEN, _remediate, _settings
from tests.servers import serve_wsgi

BEARER = {"Authorization": f"Bearer {TOKEN}"}


def _waiting(engine: Engine) -> int:
    with engine.connect() as connection:
        return count_quarantine(connection, QuarantineFilter(taken_again=False))


def _alert(engine: Engine, run: RemediationRun) -> Alert:
    with Session(engine) as session:
        key = f"run:{run.run_key}"
        return session.exec(select(Alert).where(Alert.alert_key == key)).one()


def _held(engine: Engine) -> list[QuarantinedRow]:
    with Session(engine) as session:
        return list(session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).all())


def test_a_row_sent_fixed_from_another_file_is_marked_when_sent_and_waits_no_more(
    loop: Loop,  # noqa: F811 (the fixture imported above)
    make_app: Callable[[Settings], Flask],
) -> None:
    """The poller refused `x` in `day.csv` (no meter by that name) and meterfix quarantined
    it; the customer fixed it and uploaded it as `day-fixed.csv`, and the poller sent it.
    The entry stayed unmarked: listed by `taken_again=no`, counted waiting by the digest, its
    run's alert open, until a re-run's pick found it sent and left it. It is marked when
    Stripe acknowledges its batch, saying by what, and its run's alert is resolved."""
    with bundled_poller(loop) as deps:
        _now, _other, _row, fixed = a_row_the_poller_refused(loop, deps)
        [entry] = _held(loop.engine)
        with Session(loop.engine) as session:
            run = session.get(RemediationRun, entry.run_id)
        assert run is not None and _alert(loop.engine, run).status == "open"
        assert _waiting(loop.engine) == 1
        time.sleep(1)
        _put(loop, "day-fixed.csv", usage_csv([fixed]))
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "x"]
    [entry] = _held(loop.engine)
    assert entry.rerun_id is None and entry.taken_again is not None
    assert entry.taken_again.startswith("usage/day-fixed.csv (ETag "), entry.taken_again
    assert ", sent by the poller " in entry.taken_again
    assert _waiting(loop.engine) == 0
    app = make_app(loop.settings.model_copy(update={"mfx_admin_token": TOKEN}))
    with serve_wsgi(app) as server:
        listed = requests.get(
            f"{server.url}/api/quarantine?taken_again=no", headers=BEARER, timeout=10
        ).json()
        marked = requests.get(
            f"{server.url}/api/quarantine?taken_again=yes", headers=BEARER, timeout=10
        ).json()
    assert listed["data"] == []
    assert [(row["identifier"], row["taken_again"]) for row in marked["data"]] == [
        ("x", entry.taken_again)
    ]
    alert = _alert(loop.engine, run)
    assert alert.status == "resolved" and alert.subject.endswith("; taken again"), alert.subject


def test_the_older_entry_of_a_row_quarantined_again_is_marked_when_the_newer_run_ends(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
) -> None:
    """Two runs quarantined the same row (a copy of the file): both entries were listed as
    waiting (2 rows in the digest, the first run's alert open) though a re-run takes the
    newer one only and leaves the older one. When the copy's run ends the older entry is
    marked, naming that run, and the first run's alert is resolved; a row of the same
    identifier with another timestamp (other usage) stays waiting."""
    sandbox_server.admin.create_meter("api_requests")
    settings = _settings(make_settings, sandbox_server, db_url)
    engine = make_engine(db_url)
    now = int(time.time())
    rows = f"{HEADER}b1,{now},tokens,cus_1,3,no_meter\nb2,{now},tokens,cus_1,4,no_meter\n"
    first = _remediate(settings, engine, tmp_path, rows)
    other = f"{HEADER}b2,{now - 3600},tokens,cus_1,4,no_meter\n"  # b2 again, other usage
    second = _remediate(settings, engine, tmp_path, other, key="file_other")
    assert (first.quarantined, second.quarantined, _waiting(engine)) == (2, 1, 3)
    time.sleep(0.01)
    b1 = f"{HEADER}b1,{now},tokens,cus_1,3,no_meter\n"
    copy = _remediate(settings, engine, tmp_path, b1, key="file_copy")
    assert copy.quarantined == 1
    held = _held(engine)
    by = {(row.run_id, row.identifier): row for row in held}
    older = by[(first.id, "b1")]  # type: ignore[index]
    assert older.taken_again is not None and older.taken_again.startswith(
        f"file_copy, quarantined again there by run {copy.id} at "
    ), older.taken_again
    assert older.taken_again.endswith(" UTC (that entry is the one to re-run)")
    assert by[(first.id, "b2")].taken_again is None  # type: ignore[index]
    assert by[(second.id, "b2")].taken_again is None  # type: ignore[index]
    assert by[(copy.id, "b1")].taken_again is None  # type: ignore[index]
    assert _waiting(engine) == 3  # b2 twice (two usages), b1 once (the copy's entry)
    alert = _alert(engine, first)
    assert (alert.status, alert.subject) == (
        "open",
        f"run #{first.id} (import_set.succeeded): 2 rows quarantined; "
        "1 of 2 taken again, 1 still waiting",
    )
    b2 = f"{HEADER}b2,{now},tokens,cus_1,4,no_meter\n"
    again = _remediate(settings, engine, tmp_path, b2, key="file_b2")
    assert again.quarantined == 1
    assert _waiting(engine) == 3  # the first run's b2 now marked, the new one waiting
    assert _alert(engine, first).status == "resolved"
    assert _alert(engine, copy).status == "open"
    engine.dispose()


def test_a_run_alert_names_a_code_meter_or_customer_only_when_every_row_shares_it(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """A run quarantined a row of one code and customer and a row of another: its alert said
    code=meter_event_customer_not_found customer=acme-42 rows=2 (the largest group, a tie,
    beside the run's total). Now it names neither, and its message counts them; the meter
    both share is named, and so are the code and customer of a run whose rows share them.
    Told again (a row taken), the message keeps the count."""
    sandbox_server.admin.create_meter("api_requests")
    settings = _settings(make_settings, sandbox_server, db_url)
    engine = make_engine(db_url)
    now = int(time.time())
    mixed = (
        f"{HEADER}a1,{now},api_requests,acme-42,5,meter_event_customer_not_found\n"
        "a2,1000000000,api_requests,cus_1,7,timestamp_too_far_in_past\n"
    )
    run = _remediate(settings, engine, tmp_path, mixed)
    assert run.quarantined == 2
    alert = _alert(engine, run)
    assert (alert.code, alert.customer, alert.meter, alert.rows) == (
        None,
        None,
        "api_requests",
        2,
    )
    spread = (
        "\nQuarantined rows: 2 codes (meter_event_customer_not_found 1 row, "
        "timestamp_too_far_in_past 1 row), 2 customers."
    )
    assert alert.message.endswith("quarantined; source file_q" + spread), alert.message
    app = make_app(settings)
    with serve_wsgi(app) as server:
        listed = requests.get(f"{server.url}/api/alerts", headers=BEARER, timeout=10).json()
    [shown] = [a for a in listed["data"] if a["kind"] == "remediation.run"]
    assert (shown["code"], shown["customer"], shown["meter"]) == (None, None, "api_requests")
    ids = [row.id for row in _held(engine) if row.identifier == "a1"]
    mark_rows_taken_again(engine, ids, "usage/day-fixed.csv (ETag e1)", settle_alerts_of_rows)
    alert = _alert(engine, run)
    assert alert.status == "open" and (spread + "\nTaken again since: ") in alert.message
    shared = f"{HEADER}c1,{now},tokens,cus_9,3,no_meter\nc2,{now},tokens,cus_9,4,no_meter\n"
    same = _remediate(settings, engine, tmp_path, shared, key="file_same")
    alert = _alert(engine, same)
    assert (alert.code, alert.customer, alert.meter, alert.rows) == (
        "no_meter",
        "cus_9",
        "tokens",
        2,
    )
    assert alert.message.endswith("quarantined; source file_same"), alert.message
    engine.dispose()


def test_a_json_rerun_body_sent_as_a_form_is_told_the_content_type_it_needs(
    db_url: str,
    admin_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """`curl -d '{"code":"x"}'` (no Content-Type: curl sends a form) was answered 400
    "unknown filter '{"code": "x"}'", the header it needs unsaid. It says it now; with the
    header the same body queues the re-run."""
    app = make_app(admin_settings(TOKEN))
    with serve_wsgi(app) as server:
        url = f"{server.url}/api/quarantine/rerun"
        auth = ["-H", f"Authorization: Bearer {TOKEN}"]
        json_type = ["-H", "Content-Type: application/json"]
        as_form = subprocess.run(
            ["curl", "-sS", "-w", "\n%{http_code}", *auth, "-d", '{"code":"x"}', url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        as_json = subprocess.run(
            ["curl", "-sS", "-w", "\n%{http_code}", *auth, *json_type, "-d", '{"code":"x"}', url],
            capture_output=True,
            text=True,
            timeout=30,
        )
    body, status = as_form.stdout.rsplit("\n", 1)
    assert status == "400", as_form
    assert json.loads(body) == {
        "error": "the body is a JSON object sent as a form (Content-Type: "
        "application/x-www-form-urlencoded); send it with Content-Type: application/json "
        "(curl: -H 'Content-Type: application/json', or --json)"
    }
    body, status = as_json.stdout.rsplit("\n", 1)
    assert status == "200", as_json  # nothing quarantined under code x: nothing queued
    assert json.loads(body)["queued"] is False
