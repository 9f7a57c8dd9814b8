"""A quarantine re-run's outputs in a real S3 bucket (moto), Stripe's S3 connector played by
the sandbox: their keys are made of characters S3 needs no special handling for
(`corrected/rerun-<action>/quarantine-rerun-<action>.corrected.r1.jsonl`; they held spaces,
`quarantine re-run <action>.corrected.r1.jsonl`), the rows of a CSV file go out with their
timestamp as a JSON number (Stripe's S3 file format; they went out as `"1764000000"`), and
the connector imports them. A re-run started under the keys it had before is redone under
them: nothing new uploaded."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlmodel import Session, select

from service.config import Settings
from service.jobs.rerun_keys import rerun_key
from service.jobs.store.runs import start_run
from service.models import OutputObject, RemediationRun, RunTrigger
from tests.integration.test_e2e import BUCKET, Loop, _put, running_loop
from tests.integration.test_web_rerun import TOKEN

BEARER = {"Authorization": f"Bearer {TOKEN}"}
HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
# AWS's "safe characters" for object key names, and the folder separator
SAFE_KEY = re.compile(r"[0-9A-Za-z!_.*'()/-]+")


@pytest.fixture
def loop(
    db_url: str, s3_endpoint: str, tmp_path: Path, make_app: Callable[[Settings], Flask]
) -> Iterator[Loop]:
    """Stripe's connector imports the bucket (the bundled poller off)."""
    with running_loop(db_url, s3_endpoint, tmp_path, make_app, poller="off") as running:
        yield running


def _quarantined_then_queued(loop: Loop, make_app: Callable[[Settings], Flask]) -> tuple[int, int]:
    """`k1` of `day.csv` refused by the connector (no meter `tokens`) and quarantined; the
    meter made and a re-run of it queued. The row's timestamp and the re-run's action id."""
    stamp = int(time.time()) - 60
    _put(loop, "day.csv", (HEADER + f"k1,{stamp},tokens,cus_alice,5\n").encode())
    loop.sandbox.connector_poll()
    loop.drain()
    loop.sandbox.create_meter("tokens")
    client = make_app(loop.settings.model_copy(update={"mfx_admin_token": TOKEN})).test_client()
    queued = client.post("/api/quarantine/rerun?code=no_meter", headers=BEARER).get_json()
    assert queued["queued"] and queued["rows"] == 1, queued
    return stamp, int(queued["action_id"])


def _rerun_outputs(loop: Loop) -> dict[str, str]:
    """The re-run's outputs, kind -> key, as its run recorded them."""
    with loop.session() as session:
        run = session.exec(
            select(RemediationRun).where(RemediationRun.trigger == RunTrigger.QUARANTINE_RERUN)
        ).one()
        found = session.exec(select(OutputObject).where(OutputObject.run_id == run.id)).all()
    return {output.kind: output.key for output in found}


def test_rerun_outputs_have_safe_keys_and_whole_second_numbers_the_connector_imports(
    loop: Loop, make_app: Callable[[Settings], Flask]
) -> None:
    stamp, action = _quarantined_then_queued(loop, make_app)
    loop.drain()
    outputs = _rerun_outputs(loop)
    corrected = f"usage/corrected/rerun-{action}/quarantine-rerun-{action}.corrected.r1.jsonl"
    assert outputs["corrected"] == corrected, outputs
    assert all(
        SAFE_KEY.fullmatch(key) and len(key.rsplit("/")[-1]) < 255 for key in outputs.values()
    )
    rerun_keys = [key for key in loop.objects() if f"rerun-{action}/" in key]
    assert rerun_keys and all(SAFE_KEY.fullmatch(key) for key in rerun_keys), rerun_keys
    head = loop.s3.head_object(Bucket=BUCKET, Key=corrected)
    assert head["Metadata"]["mfx-source"] == f"quarantine-rerun-{action}"  # its lineage
    [row] = [json.loads(line) for line in loop.objects()[corrected].decode().splitlines()]
    assert row == {
        "identifier": "k1-mfx1",
        "timestamp": stamp,  # a JSON number, as Stripe's S3 format shows it
        "event_name": "tokens",
        "payload": {"stripe_customer_id": "cus_alice", "value": "5"},  # as the file gave it
    }
    loop.sandbox.connector_poll()  # Stripe's connector imports the re-run's object
    [sent] = [e for e in loop.sandbox.meter_events() if e["identifier"] == "k1-mfx1"]
    assert sent["timestamp"] == stamp and sent["payload"]["value"] == "5"
    before = loop.objects()
    loop.drain()  # the task ran once: nothing redone, nothing uploaded
    assert loop.objects() == before


def test_a_rerun_started_under_its_old_keys_is_redone_under_them(
    loop: Loop, make_app: Callable[[Settings], Flask]
) -> None:
    """A re-run's try that started before the upgrade (its run recorded with the source
    `quarantine re-run <action>`, its corrected object maybe uploaded and imported) and is
    retried after it: redone under the keys it had, not uploaded again under new ones (the
    connector would import the same rows twice; a run already done is never redone, its run
    key unchanged)."""
    _stamp, action = _quarantined_then_queued(loop, make_app)
    old = f"quarantine re-run {action}"
    start_run(loop.engine, rerun_key(str(action), 1, 0), RunTrigger.QUARANTINE_RERUN, old, 1, 0)
    loop.drain()
    outputs = _rerun_outputs(loop)
    assert outputs["corrected"] == f"usage/corrected/rerun-{action}/{old}.corrected.r1.jsonl"
    assert not [key for key in loop.objects() if "quarantine-rerun-" in key]
    with Session(loop.engine) as session:
        [run] = session.exec(select(RemediationRun).where(RemediationRun.source == old)).all()
    assert (run.status, run.corrected + run.valid) == ("done", 1)
