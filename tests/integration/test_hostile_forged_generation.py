"""Forged or garbage lineage metadata on the source object of an import set: the task must
not crash, be retried and dead-letter (its rows never billed)."""

# ruff: noqa: F811  (fixtures imported from the modules that define them)
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from service.models import InboxEvent, RemediationRun
from tests.integration.test_remediation_tasks import (  # noqa: F401
    Service,
    _import_set_with_errors,
    service,
)


@pytest.mark.parametrize(
    "sidecar",
    [
        json.dumps({"mfx-generation": "99999999999999999999"}),  # 20 digits: past a 64-bit int
        json.dumps({"mfx-generation": "9" * 5000}),  # past Python's int() digit limit
        json.dumps({"mfx-generation": "\u00b2"}),  # "²".isdigit() is True, int("²") fails
        "{not json",  # a truncated / garbage sidecar
    ],
    ids=["20-digits", "5000-digits", "superscript", "garbage"],
)
def test_forged_generation_metadata_does_not_kill_the_task(service: Service, sidecar: str) -> None:
    now = int(time.time()) - 60
    bucket = Path(service.settings.bucket_url.removeprefix("file://"))
    bucket.mkdir(parents=True, exist_ok=True)
    header = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
    (bucket / "daily.csv").write_text(header + f"a1,{now * 1000},api_requests,cus_1,5\n")
    (bucket / "daily.csv.meta.json").write_text(sidecar)
    old = time.time() - 600  # written before the import set's event
    import os

    os.utime(bucket / "daily.csv", (old, old))
    event = _import_set_with_errors(service, "impset_forged")
    event["data"]["object"]["source_object"] = "daily.csv"  # type: ignore[index]
    service.deliver(event)
    service.drain()
    with Session(service.engine) as session:
        task = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).one()
        runs = session.exec(select(RemediationRun)).all()
    assert task.status == "done", (task.status, task.attempts, task.last_error)
    assert [r.status for r in runs] == ["done"]
