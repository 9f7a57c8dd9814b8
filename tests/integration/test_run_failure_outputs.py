"""A run whose try fails after some of its outputs reached the bucket: the run page lists the
objects it did upload (a corrected object is imported, billed, whatever became of the run), and
the try that succeeds later replaces them with its own, each once."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from service.config import Settings
from service.db import make_engine
from service.models import RemediationRun
from tests.conftest import SandboxServer
from tests.integration.test_web_rerun import FAILED, TOKEN, _remediate, _settings


def test_a_failed_run_lists_the_objects_it_uploaded_and_a_later_try_replaces_them(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    sandbox_server.admin.create_meter("api_requests")
    now = int(time.time())
    settings = _settings(make_settings, sandbox_server, db_url)
    bucket = Path(settings.bucket_url[len("file://") :])
    # the quarantine object's key is taken by a folder: its upload fails, the corrected
    # object's (written first) has gone through
    blocker = bucket / "quarantine" / "impset_file_q" / "file_q.quarantine.r1.csv"
    blocker.mkdir(parents=True)
    engine = make_engine(db_url)
    content = FAILED.format(now=now, ms=now * 1000)
    with pytest.raises(OSError):
        _remediate(settings, engine, tmp_path, content)

    client = make_app(settings).test_client()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    [run] = client.get("/api/runs", headers=bearer).get_json()["data"]
    assert run["status"] == "failed" and "file_q.quarantine.r1.csv" in run["error"]
    detail = client.get(f"/api/runs/{run['id']}", headers=bearer).get_json()
    [corrected] = detail["outputs"]
    assert (corrected["kind"], corrected["key"], corrected["rows"]) == (
        "corrected",
        "corrected/impset_file_q/file_q.corrected.r1.csv",
        1,
    )
    assert (bucket / corrected["key"]).read_text().splitlines()[1].startswith("a3-mfx1,")

    blocker.rmdir()  # the operator clears the way; the retry (a replay) runs it again
    again = _remediate(settings, engine, tmp_path, content)
    assert isinstance(again, RemediationRun) and again.id == run["id"]
    detail = client.get(f"/api/runs/{run['id']}", headers=bearer).get_json()
    assert detail["status"] == "done"
    assert sorted((o["kind"], o["key"]) for o in detail["outputs"]) == [
        ("audit", "quarantine/impset_file_q/file_q.r1.audit.jsonl"),
        ("corrected", "corrected/impset_file_q/file_q.corrected.r1.csv"),
        ("quarantine", "quarantine/impset_file_q/file_q.quarantine.r1.csv"),
    ]
    engine.dispose()
