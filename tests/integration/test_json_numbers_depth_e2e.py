"""A JSON value stored with its quarantined row and re-run comes out as the file spelled it.

The quarantined row is stored in full as JSON text (exact); read back by the database's JSON
type it became a Python float, and the re-run wrote `1.2345678901234568e+16` to its corrected
object: a billed value changed, with nothing in the audit. Real wiring: the sandbox's meters,
a `file://` bucket, the worker running the re-run task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask
from sqlmodel import Session, select

from remediation.repair import plan_input, read_repaired
from remediation.rules import load_rules
from service.adapters.bucket import open_bucket
from service.config import Settings
from service.db import make_engine
from service.jobs.runs import RunContext, RunRequest, execute_run
from service.models import RemediationRun
from service.runtime import Runtime
from service.worker.loop import InboxWorker
from service.worker.task_runner import TaskRunner
from tests.conftest import SandboxServer

TOKEN = "numbers-token"
VALUES = ["12345678901234567.25", "9007199254740993.5", "99999999999999999999.5", "0.10"]


def test_a_rerun_writes_json_numbers_as_the_file_spelled_them(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    sandbox_server.admin.create_meter("api_requests")
    now = int(time.time())
    settings = make_settings(
        database_url=db_url,
        mfx_admin_token=TOKEN,
        stripe_api_key=sandbox_server.api_key,
        stripe_webhook_secrets=sandbox_server.webhook_secret,
        stripe_api_base=sandbox_server.url,
        stripe_files_base=sandbox_server.url,
        stripe_meter_events_base=sandbox_server.url,
    )
    engine = make_engine(db_url)
    lines = [
        f'{{"identifier":"n{n}","timestamp":{now},"event_name":"tokens",'
        f'"payload":{{"stripe_customer_id":"cus_1","value":{value}}},"error_code":"no_meter"}}'
        for n, value in enumerate(VALUES)
    ]
    first = _remediate(settings, engine, tmp_path, "\n".join(lines) + "\n")
    assert (first.corrected, first.quarantined) == (0, len(VALUES))

    sandbox_server.admin.create_meter("tokens")  # the operator makes the missing meter
    client = make_app(settings).test_client()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    queued = client.post(f"/api/quarantine/rerun?run={first.id}", headers=bearer).get_json()
    assert queued["queued"] and queued["rows"] == len(VALUES)
    runtime = Runtime(settings, engine=engine)
    report = InboxWorker(engine, settings, task_runner=TaskRunner(runtime)).drain()
    assert report.done == [queued["task"]], report

    with Session(engine) as session:
        rerun = session.exec(
            select(RemediationRun).where(RemediationRun.trigger == "quarantine_rerun")
        ).one()
    assert (rerun.input_rows, rerun.corrected + rerun.valid, rerun.quarantined) == (4, 4, 0)
    detail = client.get(f"/api/runs/{rerun.id}", headers=bearer).get_json()
    [corrected] = [o for o in detail["outputs"] if o["kind"] == "corrected"]
    text = (Path(settings.bucket_url[len("file://") :]) / corrected["key"]).read_text()
    written = [row.split('"value":', 1)[1].split("}", 1)[0] for row in text.splitlines()]
    assert written == VALUES
    engine.dispose()


def _remediate(settings: Settings, engine: object, tmp_path: Path, content: str) -> RemediationRun:
    """One run as the import-set job makes it (the same reader and execute_run)."""
    path = tmp_path / "numbers.jsonl"
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
        run_key="import_set:impset_n:numbers",
        trigger="import_set.succeeded",
        source="numbers",
        tag="impset_numbers",
        generation=1,
        fmt=plan.fmt,
        now=int(time.time()),
        columns=plan.columns or None,
    )
    with path.open("rb") as stream:
        return execute_run(ctx, request, read_repaired(stream, plan, rules))
