"""Quarantined rows stored in full by a real run, then "re-run with current rules" end to end:
the API queues a task, the worker runs it through the real wiring (sandbox meters, file://
bucket), rows that now pass land in a new corrected object, the rest stay quarantined."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from sqlmodel import Session, col, select

from remediation.repair import plan_input, read_repaired
from remediation.rules import load_rules
from service.adapters.bucket import open_bucket
from service.config import Settings
from service.db import make_engine
from service.jobs import quarantine_rerun
from service.jobs.run_context import RunContext, RunRequest
from service.jobs.runs import execute_run
from service.models import InboxEvent, QuarantinedRow, RemediationRun
from service.runtime import Runtime
from service.worker.loop import InboxWorker
from service.worker.task_runner import TaskRunner
from service.worker.tasks import TaskKind
from tests.conftest import SandboxServer

TOKEN = "rerun-token-0123456789"
FAILED = (
    "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
    "a1,{now},api_requests,acme-42,5,meter_event_customer_not_found\n"
    "a2,1000000000,api_requests,cus_1,7,timestamp_too_far_in_past\n"
    "a3,{ms},api_requests,cus_1,9,timestamp_in_future\n"
    "a4,{now},tokens,cus_1,3,no_meter\n"
)


def test_rows_stored_in_full_then_rerun_with_current_rules(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    sandbox_server.admin.create_meter("api_requests")
    now = int(time.time())
    rules = tmp_path / "rules.toml"
    rules.write_text("[policy]\n")
    settings = _settings(make_settings, sandbox_server, db_url, mfx_rules=str(rules))
    engine = make_engine(db_url)
    first = _remediate(settings, engine, tmp_path, FAILED.format(now=now, ms=now * 1000))
    assert (first.corrected, first.quarantined) == (1, 3)
    with Session(engine) as session:
        stored = session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).all()
    assert [(r.identifier, r.code, r.meter, r.customer) for r in stored] == [
        ("a1", "meter_event_customer_not_found", "api_requests", "acme-42"),
        ("a2", "timestamp_too_far_in_past", "api_requests", "cus_1"),
        ("a4", "no_meter", "tokens", "cus_1"),
    ]
    assert stored[0].record["payload"] == {"stripe_customer_id": "acme-42", "value": "5"}
    assert stored[0].record["timestamp"] == str(now) and stored[0].record["mfx_reason"]

    rules.write_text('[customers]\n"acme-42" = "cus_acme"\n')  # the operator's fixes:
    sandbox_server.admin.create_meter("tokens")  # a customer map entry and the missing meter
    client = make_app(settings).test_client()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    queued = client.post(f"/api/quarantine/rerun?run={first.id}", headers=bearer).get_json()
    assert queued["queued"] and queued["rows"] == 3
    report = InboxWorker(
        engine, settings, task_runner=TaskRunner(Runtime(settings, engine=engine))
    ).drain()
    assert report.done == [queued["task"]], report

    with Session(engine) as session:
        rerun = session.exec(
            select(RemediationRun).where(RemediationRun.trigger == "quarantine_rerun")
        ).one()
        old = session.exec(select(QuarantinedRow).where(QuarantinedRow.run_id == first.id)).all()
    assert (rerun.input_rows, rerun.valid, rerun.corrected, rerun.quarantined) == (3, 1, 1, 1)
    assert {row.rerun_id for row in old} == {rerun.id}
    still = client.get("/api/quarantine", headers=bearer).get_json()["data"]
    assert [(r["identifier"], r["code"], r["run_id"]) for r in still] == [
        ("a2", "timestamp_too_far_in_past", rerun.id)
    ]
    taken = client.get(f"/api/quarantine?run={first.id}", headers=bearer).get_json()["data"]
    assert {r["rerun_id"] for r in taken} == {rerun.id}
    detail = client.get(f"/api/runs/{rerun.id}", headers=bearer).get_json()
    assert detail["input"] == {"type": "quarantine_rerun", "action_id": str(queued["action_id"])}
    assert detail["inputs"][0]["action"]["detail"]["rows"] == 3
    [corrected] = [o for o in detail["outputs"] if o["kind"] == "corrected"]
    text = (Path(settings.bucket_url[len("file://") :]) / corrected["key"]).read_text()
    assert '"identifier":"a1-mfx1"' in text and "cus_acme" in text and "a2" not in text
    assert '"identifier":"a4-mfx1"' in text and '"event_name":"tokens"' in text  # passes now
    again = InboxWorker(engine, settings, task_runner=TaskRunner(Runtime(settings, engine=engine)))
    assert again.drain().done == []  # the task ran once
    engine.dispose()


def test_a_rerun_of_rows_from_runs_of_two_generations_makes_a_run_for_each(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """Whether a row's identifier is ours is a fact of ITS run's lineage: `inv-mfx1` that a
    first run (generation 1, a customer's file) quarantined is the customer's own identifier,
    not our `inv` re-sent. One re-run run at the newest generation of its rows (2, for a row of
    a second-generation run beside them) traced it as `inv` re-sent, and both rows went out as
    `inv-mfx2` (Stripe keeps one: usage lost). Now each generation's rows make a run of that
    generation, as their own run would have corrected them. The runs here keep no input
    generation, as runs from before migration 0010: traced from their generation less one
    (`z-mfx1` is our `z` re-sent), under the run keys a re-run had before it."""
    sandbox_server.admin.create_meter("api_requests")
    now = int(time.time())
    settings = _settings(make_settings, sandbox_server, db_url)
    engine = make_engine(db_url)
    header = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
    customers = header + "".join(
        f"{identifier},{now},tokens,cus_1,{value},no_meter\n"
        for identifier, value in (("inv", 1), ("inv-mfx1", 2))
    )
    first = _remediate(settings, engine, tmp_path, customers)
    ours = header + f"z-mfx1,{now},tokens,cus_1,3,no_meter\n"  # our first output, failed again
    second = _remediate(settings, engine, tmp_path, ours, generation=2, key="file_r")
    counts = (first.generation, first.quarantined, second.generation, second.quarantined)
    assert counts == (1, 2, 2, 1)
    assert (first.input_generation, second.input_generation) == (None, None)

    sandbox_server.admin.create_meter("tokens")  # the operator makes the missing meter
    client = make_app(settings).test_client()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    queued = client.post("/api/quarantine/rerun?code=no_meter", headers=bearer).get_json()
    assert queued["queued"] and queued["rows"] == 3
    later = header + f"late,{now},widgets,cus_1,4,no_meter\n"  # quarantined after the request
    _remediate(settings, engine, tmp_path, later, key="file_s")
    worker = InboxWorker(engine, settings, task_runner=TaskRunner(Runtime(settings, engine=engine)))
    assert worker.drain().done == [queued["task"]]

    with Session(engine) as session:
        reruns = session.exec(
            select(RemediationRun)
            .where(RemediationRun.trigger == "quarantine_rerun")
            .order_by(col(RemediationRun.id))
        ).all()
    action = queued["action_id"]
    assert [(r.run_key, r.generation, r.input_rows, r.valid, r.quarantined) for r in reruns] == [
        (f"quarantine_rerun:{action}", 1, 2, 2, 0),
        (f"quarantine_rerun:{action}:g2", 2, 1, 1, 0),
    ]
    sent: dict[str, str] = {}
    for run in reruns:
        detail = client.get(f"/api/runs/{run.id}", headers=bearer).get_json()
        assert detail["input"] == {"type": "quarantine_rerun", "action_id": str(action)}
        [corrected] = [o for o in detail["outputs"] if o["kind"] == "corrected"]
        text = (Path(settings.bucket_url[len("file://") :]) / corrected["key"]).read_text()
        sent |= {
            row["payload"]["value"]: row["identifier"] for row in map(json.loads, text.splitlines())
        }
    digest = hashlib.sha256(b"inv").hexdigest()[:12]  # `inv-mfx1` is an original of its input
    assert sent == {"1": f"inv-{digest}-mfx1", "2": "inv-mfx1-mfx1", "3": "z-mfx2"}
    # the row quarantined after the request is not taken; the task ran once
    left = client.get("/api/quarantine?code=no_meter", headers=bearer).get_json()["data"]
    assert [(r["identifier"], r["rerun_id"]) for r in left] == [("late", None)]
    assert worker.drain().done == []
    engine.dispose()


def test_a_rerun_of_our_row_that_a_run_of_its_own_generation_quarantined_goes_out_above_it(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """A run before the generation rule (an import set naming no object ran in generation 1)
    quarantined `a1-mfx1`, the row a first-generation run of ours wrote for `a1`, as the
    database holds it after an upgrade. Re-run in the generation of the run that quarantined
    it, it went out as `a1-mfx1` again: the identifier Stripe had just refused, which it drops
    as a duplicate within a day (usage lost). The re-run writes above every generation the
    audit says wrote its rows, as every other run does."""
    settings = _settings(make_settings, sandbox_server, db_url)
    engine = make_engine(db_url)
    second = _ours_quarantined_in_generation_1(sandbox_server, settings, engine, tmp_path)

    sandbox_server.admin.create_meter("tokens")  # the operator makes the missing meter
    client = make_app(settings).test_client()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    queued, rerun = _rerun_one(client, settings, engine, f"run={second.id}", rows=1)
    assert (rerun.run_key, rerun.generation, rerun.valid) == (
        f"quarantine_rerun:{queued['action_id']}",  # keyed by the quarantining run's generation
        2,
        1,
    )
    detail = client.get(f"/api/runs/{rerun.id}", headers=bearer).get_json()
    [corrected] = [o for o in detail["outputs"] if o["kind"] == "corrected"]
    text = (Path(settings.bucket_url[len("file://") :]) / corrected["key"]).read_text()
    [sent] = map(json.loads, text.splitlines())
    assert (sent["identifier"], sent["event_name"]) == ("a1-mfx2", "tokens")
    engine.dispose()


def test_a_rerun_judges_rows_at_the_time_it_was_queued_however_late_its_task_runs(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A re-run's reference time was the clock when its task ran: a task run again after a
    crash judged the rows (and wrote its outputs) otherwise than the first attempt. It is the
    time the operator queued it: a row three hours ahead then is still ahead three hours
    later."""
    sandbox_server.admin.create_meter("api_requests")
    now = int(time.time())
    settings = _settings(make_settings, sandbox_server, db_url)
    engine = make_engine(db_url)
    failed = (
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
        f"f1,{now + 3 * 3600},api_requests,cus_1,5,timestamp_in_future\n"  # past the skew
    )
    first = _remediate(settings, engine, tmp_path, failed)
    assert (first.corrected, first.quarantined) == (0, 1)
    client = make_app(settings).test_client()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    queued = client.post(f"/api/quarantine/rerun?run={first.id}", headers=bearer).get_json()
    assert queued["queued"] and queued["rows"] == 1
    later = time.time() + 3 * 3600  # the task runs 3 h later (or again, after a crash)
    monkeypatch.setattr("service.jobs.quarantine_rerun.time", SimpleNamespace(time=lambda: later))
    worker = InboxWorker(engine, settings, task_runner=TaskRunner(Runtime(settings, engine=engine)))
    assert worker.drain().done == [queued["task"]]
    with Session(engine) as session:
        rerun = session.exec(
            select(RemediationRun).where(RemediationRun.trigger == "quarantine_rerun")
        ).one()
    assert (rerun.input_rows, rerun.corrected, rerun.valid, rerun.quarantined) == (1, 0, 0, 1)
    still = client.get("/api/quarantine", headers=bearer).get_json()["data"]
    assert [(r["identifier"], r["code"], r["run_id"]) for r in still] == [
        ("f1", "timestamp_in_future", rerun.id)
    ]
    engine.dispose()


HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"


@pytest.mark.parametrize(
    ("content", "suffix", "reason"),
    [
        # an unquoted thousands separator: 7 fields, the value read as "1" of "1,234"
        (
            "identifier,timestamp,event_name,error_code,payload_stripe_customer_id,payload_value\n"
            "q1,{now},api_requests,no_meter,cus_1,1,234\n",
            ".csv",
            None,
        ),
        (
            '{{"identifier": "m3", "timestamp": {now}, "event_name": "api_requests", '
            '"payload": {{"stripe_customer_id": "cus_1", "value": "5"}}\n',
            ".jsonl",
            None,
        ),
    ],
    ids=["csv-fields", "jsonl-not-json"],
)
def test_a_malformed_row_rerun_stays_quarantined_as_it_was(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
    content: str,
    suffix: str,
    reason: str | None,
) -> None:
    """What is stored of a malformed row is what could be read of it, not the row. Re-run,
    the CSV row of 7 fields for 6 columns (a value of "1,234" unquoted; it arrived as
    `no_meter`, a code our validation decides) was validated from its first 6 and sent as
    `q1-mfx1` with the value 1; the JSON Lines line that is not JSON came back as a row with
    no meter under an identifier made up for it. Both stay quarantined malformed, for the
    same reason, under the code they arrived with, and nothing goes out."""
    sandbox_server.admin.create_meter("api_requests")
    settings = _settings(make_settings, sandbox_server, db_url)
    engine = make_engine(db_url)
    first = _remediate(
        settings, engine, tmp_path, content.format(now=int(time.time())), suffix=suffix
    )
    assert (first.input_rows, first.quarantined) == (1, 1)
    client = make_app(settings).test_client()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    before = client.get("/api/quarantine", headers=bearer).get_json()["data"]
    [(identifier, code, why)] = [(r["identifier"], r["code"], r["reason"]) for r in before]
    assert [r["record"]["mfx_code"] for r in before] == ["malformed_row"]
    _, rerun = _rerun_one(client, settings, engine, f"run={first.id}", rows=1)
    engine.dispose()
    assert (rerun.input_rows, rerun.corrected, rerun.valid, rerun.quarantined) == (1, 0, 0, 1)
    still = client.get("/api/quarantine", headers=bearer).get_json()["data"]
    assert [(r["identifier"], r["code"], r["reason"], r["run_id"]) for r in still] == [
        (identifier, code, why, rerun.id)
    ]
    assert [r["record"]["mfx_code"] for r in still] == ["malformed_row"]


def test_a_value_stripe_refused_that_our_checks_pass_is_not_rerun_unchanged(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """README: "A rule that would change nothing corrects nothing: a row already as the rule
    would write it (a value Stripe refused that is already plain ...; a value already within
    `value_precision`) is quarantined with that reason, never sent again unchanged under a new
    identifier only to be refused again. The one exception is deliberate: [no_meter]". A
    re-run validated such rows again instead of applying their code's rule: `5` refused as
    invalid and `1.5` refused as too precise (the meter's precision is Stripe's to know) both
    passed and went out unchanged as `v1-mfx1` and `v2-mfx1`. They stay quarantined by their
    rules' reasons; once the rules allow rounding, the re-run rounds."""
    sandbox_server.admin.create_meter("api_requests")
    rules = tmp_path / "rules.toml"
    rules.write_text("[policy]\n")
    settings = _settings(make_settings, sandbox_server, db_url, mfx_rules=str(rules))
    engine = make_engine(db_url)
    now = int(time.time())
    header = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
    content = (
        header
        + f"v1,{now},api_requests,cus_1,1.5,meter_event_value_too_many_digits\n"
        + f"v2,{now},api_requests,cus_1,5,meter_event_invalid_value\n"
    )
    first = _remediate(settings, engine, tmp_path, content)
    assert (first.input_rows, first.quarantined) == (2, 2)
    client = make_app(settings).test_client()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    reasons = {
        r["identifier"]: r["reason"]
        for r in client.get("/api/quarantine", headers=bearer).get_json()["data"]
    }
    _, rerun = _rerun_one(client, settings, engine, f"run={first.id}", rows=2)
    assert (rerun.input_rows, rerun.corrected, rerun.valid, rerun.quarantined) == (2, 0, 0, 2)
    still = client.get("/api/quarantine", headers=bearer).get_json()["data"]
    assert {r["identifier"]: (r["code"], r["reason"], r["run_id"]) for r in still} == {
        "v1": ("meter_event_value_too_many_digits", reasons["v1"], rerun.id),
        "v2": ("meter_event_invalid_value", reasons["v2"], rerun.id),
    }

    rules.write_text("[policy]\nround_too_many_digits = true\nvalue_precision = 0\n")
    queued = client.post(f"/api/quarantine/rerun?run={rerun.id}", headers=bearer).get_json()
    assert queued["queued"] and queued["rows"] == 2
    worker = InboxWorker(engine, settings, task_runner=TaskRunner(Runtime(settings, engine=engine)))
    assert worker.drain().done == [queued["task"]]
    detail = client.get(f"/api/runs/{rerun.id + 1}", headers=bearer).get_json()
    engine.dispose()
    assert (detail["corrected"], detail["valid"], detail["quarantined"]) == (1, 0, 1)
    [corrected] = [o for o in detail["outputs"] if o["kind"] == "corrected"]
    text = (Path(settings.bucket_url[len("file://") :]) / corrected["key"]).read_text()
    assert '"identifier":"v1-mfx1"' in text and '"value":"2"' in text and "v2" not in text


def test_two_reruns_at_once_take_each_row_once(
    sandbox_server: SandboxServer,
    pg_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two clicks queue two re-runs, two workers (PostgreSQL) run them at once. A re-run picks
    its rows, runs them, then marks them taken: both picked the same row before either
    marked it, and both wrote it to a corrected object, each run counting it. Here the
    second re-run starts once the first has picked, and the first waits (up to 3 s) for the
    second to pick before it runs: they are taken one at a time now, so the second finds
    the row taken."""
    sandbox_server.admin.create_meter("api_requests")
    settings = _settings(make_settings, sandbox_server, pg_url)
    engine = make_engine(pg_url)
    now = int(time.time())
    first = _remediate(settings, engine, tmp_path, HEADER + f"t1,{now},tokens,cus_1,1,no_meter\n")
    assert first.quarantined == 1
    sandbox_server.admin.create_meter("tokens")
    client = make_app(settings).test_client()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    a, b = (
        client.post("/api/quarantine/rerun?code=no_meter", headers=bearer).get_json()
        for _ in range(2)
    )
    assert a["queued"] and b["queued"]
    runner = TaskRunner(Runtime(settings, engine=engine))
    picked = {ref: threading.Event() for ref in (str(a["action_id"]), str(b["action_id"]))}
    real_pick = quarantine_rerun.pick_rows

    def pick(ctx: RunContext, action_ref: str) -> Any:
        found = real_pick(ctx, action_ref)
        picked[action_ref].set()
        if action_ref == str(a["action_id"]):
            picked[str(b["action_id"])].wait(3)
        return found

    monkeypatch.setattr(quarantine_rerun, "pick_rows", pick)
    outcomes: dict[str, str] = {}

    def run(ref: str) -> None:
        outcomes[ref] = runner(TaskKind.QUARANTINE_RERUN, ref)

    first_task = threading.Thread(target=run, args=(str(a["action_id"]),))
    first_task.start()
    assert picked[str(a["action_id"])].wait(30)
    second_task = threading.Thread(target=run, args=(str(b["action_id"]),))
    second_task.start()
    first_task.join(60)
    second_task.join(60)
    with Session(engine) as session:
        reruns = session.exec(
            select(RemediationRun).where(RemediationRun.trigger == "quarantine_rerun")
        ).all()
        taken = session.exec(select(QuarantinedRow)).all()
    engine.dispose()
    assert [(r.input_rows, r.valid + r.corrected) for r in reruns] == [(1, 1)], outcomes
    assert [row.rerun_id for row in taken] == [reruns[0].id]
    assert outcomes[str(b["action_id"])].startswith("no quarantined rows to re-run")


def test_a_second_rerun_of_a_runs_rows_already_taken_is_not_queued_as_if_it_took_them(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """A re-run took all of a run's rows (two pass now). "Re-run" for that run again
    (`?run=<id>`: the run's page still lists its rows) answered 202 `{"queued": true,
    "rows": 2}` and recorded an action of 2 rows, for a task that took none: the count
    took rows a re-run took, which no re-run takes again. Nothing is queued now, as for any
    other filter that matches no row to take."""
    sandbox_server.admin.create_meter("api_requests")
    now = int(time.time())
    settings = _settings(make_settings, sandbox_server, db_url)
    engine = make_engine(db_url)
    header = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
    failed = header + f"t1,{now},tokens,cus_1,1,no_meter\n" + f"t2,{now},tokens,cus_1,2,no_meter\n"
    first = _remediate(settings, engine, tmp_path, failed)
    assert first.quarantined == 2
    sandbox_server.admin.create_meter("tokens")
    client = make_app(settings).test_client()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    queued = client.post(f"/api/quarantine/rerun?run={first.id}", headers=bearer).get_json()
    assert queued["queued"] and queued["rows"] == 2
    worker = InboxWorker(engine, settings, task_runner=TaskRunner(Runtime(settings, engine=engine)))
    assert worker.drain().done == [queued["task"]]
    with Session(engine) as session:
        taken = session.exec(select(QuarantinedRow).where(QuarantinedRow.run_id == first.id)).all()
    assert all(row.rerun_id is not None for row in taken)

    again = client.post(f"/api/quarantine/rerun?run={first.id}", headers=bearer)
    body = again.get_json()
    worker.drain()
    with Session(engine) as session:
        tasks = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).all()
    engine.dispose()
    outcomes = [str(task.outcome) for task in tasks]
    assert (again.status_code, body["queued"], body["rows"]) == (200, False, 0), (body, outcomes)


def _rerun_one(
    client: Any, settings: Settings, engine: Any, query: str, rows: int
) -> tuple[dict[str, Any], RemediationRun]:
    """Queue a re-run of the rows `query` filters (checked to be `rows`), run its task; what
    the API answered, and the re-run's one run."""
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    queued = client.post(f"/api/quarantine/rerun?{query}", headers=bearer).get_json()
    assert queued["queued"] and queued["rows"] == rows
    worker = InboxWorker(engine, settings, task_runner=TaskRunner(Runtime(settings, engine=engine)))
    assert worker.drain().done == [queued["task"]]
    with Session(engine) as session:
        rerun = session.exec(
            select(RemediationRun).where(RemediationRun.trigger == "quarantine_rerun")
        ).one()
    return queued, rerun


HEADER_ERR = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"


def _ours_quarantined_in_generation_1(
    sandbox: SandboxServer, settings: Settings, engine: Any, tmp_path: Path
) -> RemediationRun:
    """Our `a1-mfx1` (a first-generation run corrected `a1`) quarantined `no_meter` by a run
    that stayed in generation 1 (before the generation rule): that run."""
    sandbox.admin.create_meter("api_requests")
    now = int(time.time())
    row = f"a1,{now * 1000},api_requests,cus_1,5,timestamp_in_future\n"
    first = _remediate(settings, engine, tmp_path, HEADER_ERR + row)
    assert (first.generation, first.corrected) == (1, 1)
    # Stripe refuses our a1-mfx1 for its meter (made later); the old run stayed in generation 1
    ours = HEADER_ERR + f"a1-mfx1,{now},tokens,cus_1,5,no_meter\n"
    second = _remediate(settings, engine, tmp_path, ours, key="file_r")
    assert (second.generation, second.quarantined) == (1, 1)
    return second


def _settings(
    make_settings: Callable[..., Settings], sandbox: SandboxServer, db_url: str, **more: str
) -> Settings:
    """The service against the sandbox (Stripe), with the admin token of these tests."""
    return make_settings(
        database_url=db_url,
        mfx_admin_token=TOKEN,
        stripe_api_key=sandbox.api_key,
        stripe_webhook_secrets=sandbox.webhook_secret,
        stripe_api_base=sandbox.bases["api"],
        stripe_files_base=sandbox.bases["files"],
        stripe_meter_events_base=sandbox.bases["meter_events"],
        **more,
    )


def _remediate(
    settings: Settings,
    engine: object,
    tmp_path: Path,
    content: str,
    generation: int = 1,
    key: str = "file_q",
    suffix: str = ".csv",
) -> RemediationRun:
    """One run as the import-set job makes it (the same reader and execute_run)."""
    path = tmp_path / f"{key}{suffix}"
    path.write_text(content)
    rules = load_rules(None)
    runtime = Runtime(settings, engine=engine)  # type: ignore[arg-type]
    ctx = RunContext(
        engine=runtime.engine,
        settings=settings,
        bucket=open_bucket(settings),
        meters=list(runtime.meter_source.meters()),
        rules=rules,
    )
    plan = plan_input(path, rules)
    request = RunRequest(
        run_key=f"import_set:impset_q:{key}",
        trigger="import_set.succeeded",
        source=key,
        tag=f"impset_{key}",
        generation=generation,
        fmt=plan.fmt,
        now=int(time.time()),
        columns=plan.columns or None,
    )
    with path.open("rb") as stream:
        return execute_run(ctx, request, read_repaired(stream, plan, rules))


def test_two_runs_of_one_rerun_writing_one_generation_keep_both_corrected_objects(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """README: a re-run makes one run per generation of its rows, and each writes "a new
    corrected object". Our `a1-mfx1`, quarantined by a generation-1 run, goes out above it, in
    generation 2 (the test above); a row a generation-2 run quarantined goes out in
    generation 2 as well. Both runs wrote `rerun-<action>/quarantine re-run <action>.corrected.
    r2.jsonl`: the second replaced the first before anything imported it, and the first run's
    row, counted corrected, was never billed."""
    settings = _settings(make_settings, sandbox_server, db_url)
    engine = make_engine(db_url)
    _ours_quarantined_in_generation_1(sandbox_server, settings, engine, tmp_path)
    theirs = HEADER_ERR + f"b1-mfx1,{int(time.time())},tokens,cus_1,7,no_meter\n"
    third = _remediate(settings, engine, tmp_path, theirs, generation=2, key="file_s")
    assert (third.generation, third.quarantined) == (2, 1)
    sandbox_server.admin.create_meter("tokens")
    client = make_app(settings).test_client()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    queued = client.post("/api/quarantine/rerun?code=no_meter", headers=bearer).get_json()
    assert queued["queued"] and queued["rows"] == 2
    worker = InboxWorker(engine, settings, task_runner=TaskRunner(Runtime(settings, engine=engine)))
    assert worker.drain().done == [queued["task"]]
    with Session(engine) as session:
        reruns = session.exec(
            select(RemediationRun).where(RemediationRun.trigger == "quarantine_rerun")
        ).all()
    assert sorted((r.generation, r.corrected + r.valid) for r in reruns) == [(2, 1), (2, 1)]
    root = Path(settings.bucket_url[len("file://") :])
    sent: list[str] = []
    keys: list[str] = []
    for run in reruns:
        detail = client.get(f"/api/runs/{run.id}", headers=bearer).get_json()
        [corrected] = [o for o in detail["outputs"] if o["kind"] == "corrected"]
        keys.append(corrected["key"])
        lines = (root / corrected["key"]).read_text().splitlines()
        sent += [json.loads(line)["identifier"] for line in lines]
    assert len(set(keys)) == 2, keys
    assert sorted(sent) == ["a1-mfx2", "b1-mfx2"]
    engine.dispose()


def test_of_two_entries_of_one_row_a_rerun_sends_the_newer_once(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """The operator fixed the value of a quarantined row (5 -> 50) in its quarantine file and
    fed it back while its meter was still missing: quarantined again. A re-run after making
    the meter sent both entries under one identifier, `m1-mfx1` with 5, then with 50: Stripe
    kept the first, the operator's fix dropped unsaid ("2 now pass" for one row). Only the
    newer entry goes out; the older is marked with the run that quarantined it again."""
    sandbox_server.admin.create_meter("api_requests")
    now = int(time.time())
    settings = _settings(make_settings, sandbox_server, db_url)
    engine = make_engine(db_url)
    first = _remediate(
        settings, engine, tmp_path, HEADER_ERR + f"m1,{now},tokens,cus_1,5,no_meter\n"
    )
    fixed = HEADER_ERR + f"m1,{now},tokens,cus_1,50,no_meter\n"
    second = _remediate(settings, engine, tmp_path, fixed, key="file_m_back")
    assert (first.quarantined, second.quarantined) == (1, 1)

    sandbox_server.admin.create_meter("tokens")
    client = make_app(settings).test_client()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    # the older entry marked when the newer one's run ended: one row waits, one is re-run
    _queued, rerun = _rerun_one(client, settings, engine, "code=no_meter", rows=1)
    assert (rerun.input_rows, rerun.valid, rerun.corrected) == (1, 1, 0)
    detail = client.get(f"/api/runs/{rerun.id}", headers=bearer).get_json()
    [corrected] = [o for o in detail["outputs"] if o["kind"] == "corrected"]
    text = (Path(settings.bucket_url[len("file://") :]) / corrected["key"]).read_text()
    sent = [json.loads(line) for line in text.splitlines()]
    assert [(row["identifier"], row["payload"]["value"]) for row in sent] == [("m1-mfx1", "50")]
    state = _entries(client, first, second)
    assert state[second.id] == (rerun.id, None)
    assert state[first.id][0] is None
    assert state[first.id][1].startswith(
        f"file_m_back, quarantined again there by run {second.id} at "
    )
    engine.dispose()


def test_an_identifier_used_again_another_day_is_other_usage_and_both_are_rerun(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """Stripe dedupes an identifier for a day: `row-1` of one day's file and `row-1` of the
    next are two usage rows. Taken for one row quarantined twice, the first was left and
    marked, never billed (usage lost). Of the same identifier, only the same timestamp makes
    two entries one row. (Both then go out as `row-1-mfx1` in one re-run, so Stripe keeps
    one: a limit of the identifier rule within a re-run, not of this choice.)"""
    sandbox_server.admin.create_meter("api_requests")
    now = int(time.time())
    settings = _settings(make_settings, sandbox_server, db_url)
    engine = make_engine(db_url)
    day1 = HEADER_ERR + f"row-1,{now - 2 * 86400},tokens,cus_1,5,no_meter\n"
    day2 = HEADER_ERR + f"row-1,{now - 86400},tokens,cus_1,7,no_meter\n"
    first = _remediate(settings, engine, tmp_path, day1, key="day1")
    second = _remediate(settings, engine, tmp_path, day2, key="day2")
    assert (first.quarantined, second.quarantined) == (1, 1)

    sandbox_server.admin.create_meter("tokens")
    client = make_app(settings).test_client()
    _queued, rerun = _rerun_one(client, settings, engine, "code=no_meter", rows=2)
    assert (rerun.input_rows, rerun.valid) == (2, 2)
    state = _entries(client, first, second)
    assert state == {first.id: (rerun.id, None), second.id: (rerun.id, None)}
    engine.dispose()


def _entries(client: Any, *runs: RemediationRun) -> dict[int, tuple[int | None, str | None]]:
    """run id -> (the re-run that took its row, what took it elsewhere), of runs of one
    quarantined row each, as the API lists them."""
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    state = {}
    for run in runs:
        listed = client.get(f"/api/quarantine?run={run.id}", headers=bearer).get_json()["data"]
        state |= {row["run_id"]: (row["rerun_id"], row["taken_again"]) for row in listed}
    return state
