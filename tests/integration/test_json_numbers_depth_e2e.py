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

from service.config import Settings
from service.db import make_engine
from service.models import RemediationRun
from service.runtime import Runtime
from service.worker.loop import InboxWorker
from service.worker.task_runner import TaskRunner
from tests.conftest import SandboxServer
from tests.integration.test_web_rerun import TOKEN, _remediate, _settings

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
    settings = _settings(make_settings, sandbox_server, db_url)
    engine = make_engine(db_url)
    lines = [
        f'{{"identifier":"n{n}","timestamp":{now},"event_name":"tokens",'
        f'"payload":{{"stripe_customer_id":"cus_1","value":{value}}},"error_code":"no_meter"}}'
        for n, value in enumerate(VALUES)
    ]
    content = "\n".join(lines) + "\n"
    first = _remediate(settings, engine, tmp_path, content, key="numbers", suffix=".jsonl")
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
