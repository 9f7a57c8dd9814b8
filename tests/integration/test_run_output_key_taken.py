"""A run redone (its earlier try crashed after uploading its corrected object) whose try makes
other bytes than that object: made by the release before 30e2072 (timestamps as text), or under
other rules, customer map or meters. Stripe's S3 connector (the sandbox) had imported the object.
The object is kept as it is, never replaced (replaced, the connector imported it again and its
rows went out again under the same identifiers: billed twice past Stripe's dedupe window); the
run fails, not retried, with a critical alert naming the key. A quarantine or audit file of
other bytes (nothing imports them) is replaced as before."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlmodel import select

from service.config import Settings
from service.jobs.rerun_keys import rerun_key
from service.jobs.store.runs import start_run
from service.models import (
    Alert,
    CorrectionAudit,
    OutputObject,
    QuarantinedRow,
    RemediationRun,
    RunTrigger,
)
from tests.integration.test_e2e import BUCKET, Loop, _put, running_loop
from tests.integration.test_rerun_output_keys import BEARER, HEADER, _quarantined_then_queued
from tests.integration.test_web_rerun import TOKEN


@pytest.fixture
def loop(
    db_url: str, s3_endpoint: str, tmp_path: Path, make_app: Callable[[Settings], Flask]
) -> Iterator[Loop]:
    """Stripe's connector imports the bucket (the bundled poller off)."""
    with running_loop(db_url, s3_endpoint, tmp_path, make_app, poller="off") as running:
        yield running


def _earlier_try(loop: Loop, action: int, source: str, key: str, body: bytes) -> None:
    """The re-run's try that uploaded `body` to `key` and crashed; the connector imported it."""
    meta = {
        "mfx-source": source.replace(" ", "%20"),
        "mfx-generation": "1",
        "mfx-sha256": hashlib.sha256(body).hexdigest(),
        "mfx-rows": "1",
        "mfx-kind": "corrected",
    }
    start_run(loop.engine, rerun_key(str(action), 1, 0), RunTrigger.QUARANTINE_RERUN, source, 1, 0)
    loop.s3.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata=meta)
    [imported] = loop.sandbox.connector_poll()
    assert imported["type"] == "data_management.import_set.succeeded", imported


def _row(stamp: int | str, customer: str) -> bytes:
    row = {
        "identifier": "k1-mfx1",
        "timestamp": stamp,
        "event_name": "tokens",
        "payload": {"stripe_customer_id": customer, "value": "5"},
    }
    return (json.dumps(row, separators=(",", ":")) + "\n").encode()


@pytest.mark.parametrize("earlier", ["before_upgrade", "other_customer_map"])
def test_a_redone_run_keeps_the_corrected_object_its_earlier_try_uploaded(
    loop: Loop, make_app: Callable[[Settings], Flask], earlier: str
) -> None:
    stamp, action = _quarantined_then_queued(loop, make_app)
    if earlier == "before_upgrade":  # key with spaces (86b071c), timestamp as text (30e2072)
        source, body = f"quarantine re-run {action}", _row(str(stamp), "cus_alice")
    else:  # the map sent k1 to cus_bob then; cus_alice now
        source, body = f"quarantine-rerun-{action}", _row(stamp, "cus_bob")
    key = f"usage/corrected/rerun-{action}/{source}.corrected.r1.jsonl"
    _earlier_try(loop, action, source, key, body)

    report = loop.worker().drain()

    objects = loop.objects()
    assert objects[key] == body  # kept as the connector imported it
    assert [k for k in objects if k.startswith("usage/corrected/")] == [key]
    [(task, reason)] = report.dead  # at once, not retried: retrying cannot help
    assert task == f"mfx_task_quarantine_rerun_{action}" and reason.startswith(
        f"OutputKeyTaken: {key}: already holds another object than this run's try makes"
    ), report
    again = loop.sandbox.connector_poll()
    assert not [e for e in again if key in json.dumps(e)], again  # not imported again
    billed = [(e["identifier"], e["payload"]) for e in loop.sandbox.meter_events()]
    customer = json.loads(body)["payload"]["stripe_customer_id"]
    assert billed == [("k1-mfx1", {"stripe_customer_id": customer, "value": "5"})]
    with loop.session() as session:
        run = session.exec(
            select(RemediationRun).where(RemediationRun.trigger == RunTrigger.QUARANTINE_RERUN)
        ).one()
        outputs = session.exec(select(OutputObject).where(OutputObject.run_id == run.id)).all()
        alert = session.exec(select(Alert).where(Alert.alert_key == f"inbox.dead:{task}")).one()
    assert run.status == "failed" and (run.error or "").startswith(
        f"OutputKeyTaken: {key}: already holds"
    )
    # the run lists what is in the bucket under its keys: the object its earlier try uploaded
    assert [(o.kind, o.key, o.rows, o.sha256, o.uploaded) for o in outputs] == [
        ("corrected", key, 1, hashlib.sha256(body).hexdigest(), False)
    ]
    assert (alert.severity, alert.status) == ("critical", "open")
    assert alert.message.startswith(f"not retried: OutputKeyTaken: {key}: already holds")


def test_a_redone_run_replaces_an_audit_file_nothing_imports(
    loop: Loop, make_app: Callable[[Settings], Flask]
) -> None:
    stamp, action = _quarantined_then_queued(loop, make_app)
    source = f"quarantine-rerun-{action}"
    start_run(loop.engine, rerun_key(str(action), 1, 0), RunTrigger.QUARANTINE_RERUN, source, 1, 0)
    audit = f"usage/quarantine/rerun-{action}/{source}.r1.audit.jsonl"
    loop.s3.put_object(Bucket=BUCKET, Key=audit, Body=b'{"written": "by an earlier release"}\n')

    loop.drain()

    objects = loop.objects()
    assert b"earlier release" not in objects[audit] and b'"k1"' in objects[audit]
    corrected = f"usage/corrected/rerun-{action}/{source}.corrected.r1.jsonl"
    assert json.loads(objects[corrected])["timestamp"] == stamp
    loop.sandbox.connector_poll()
    assert loop.accepted() == ["k1-mfx1"]


def test_a_redone_run_refused_for_a_kept_object_loads_no_quarantined_rows(
    loop: Loop, make_app: Callable[[Settings], Flask]
) -> None:
    """Refused (`OutputKeyTaken`), the run loads none of its rows: `k2`, which it would
    quarantine now (its meter deactivated since the earlier try), is in the object kept in the
    bucket, billed; an entry of the failed run would wait in quarantine, open to a re-run."""
    stamp = int(time.time()) - 60
    rows = f"k1,{stamp},tokens,cus_alice,5\nk2,{stamp},calls,cus_alice,7\n"
    _put(loop, "day.csv", (HEADER + rows).encode())
    loop.sandbox.connector_poll()
    loop.drain()
    loop.sandbox.create_meter("tokens")
    calls = loop.sandbox.create_meter("calls")
    client = make_app(loop.settings.model_copy(update={"mfx_admin_token": TOKEN})).test_client()
    queued = client.post("/api/quarantine/rerun?code=no_meter", headers=BEARER).get_json()
    assert queued["rows"] == 2, queued
    action = int(queued["action_id"])
    source = f"quarantine-rerun-{action}"
    key = f"usage/corrected/rerun-{action}/{source}.corrected.r1.jsonl"
    k2 = _row(stamp, "cus_alice").replace(b"k1-mfx1", b"k2-mfx1").replace(b"tokens", b"calls")
    body = _row(stamp, "cus_alice") + k2.replace(b'"5"', b'"7"')
    _earlier_try(loop, action, source, key, body)  # k1-mfx1 and k2-mfx1 billed
    loop.sandbox.deactivate_meter(calls["id"])  # the redo quarantines k2 (archived_meter)

    report = loop.worker().drain()

    assert [reason.split(":")[0] for _, reason in report.dead] == ["OutputKeyTaken"], report
    assert loop.objects()[key] == body
    with loop.session() as session:
        run = session.exec(
            select(RemediationRun).where(RemediationRun.trigger == RunTrigger.QUARANTINE_RERUN)
        ).one()
        held = session.exec(select(QuarantinedRow).where(QuarantinedRow.run_id == run.id)).all()
        audit = session.exec(select(CorrectionAudit).where(CorrectionAudit.run_id == run.id)).all()
    assert run.status == "failed"
    assert [(q.identifier, q.code) for q in held] == [] and audit == []


def test_a_redo_making_no_corrected_object_is_refused_for_the_kept_one(
    loop: Loop, make_app: Callable[[Settings], Flask]
) -> None:
    """The earlier try uploaded `k1-mfx1` (imported: billed); the redo quarantines `k1` (its
    meter deactivated since) and makes no corrected object at all. Before, only the keys this
    try writes were checked: the run ended done, `k1` waited in quarantine again, and a later
    re-run billed `k1-mfx1` twice. Now the run's folder is listed: the kept object refuses it
    (`OutputKeyTaken` naming it), and none of its rows are loaded. A corrected object of
    another generation or source in that folder is not the run's."""
    stamp, action = _quarantined_then_queued(loop, make_app)
    source = f"quarantine-rerun-{action}"
    folder = f"usage/corrected/rerun-{action}/"
    key = f"{folder}{source}.corrected.r1.jsonl"
    body = _row(stamp, "cus_alice")
    _earlier_try(loop, action, source, key, body)  # k1-mfx1 billed
    others = [f"{folder}{source}.corrected.r2.jsonl", f"{folder}{source}x.corrected.r1.jsonl"]
    for other in others:
        loop.s3.put_object(Bucket=BUCKET, Key=other, Body=b"")
    [meter] = [m for m in loop.sandbox.meters() if m["event_name"] == "tokens"]
    loop.sandbox.deactivate_meter(meter["id"])  # the redo quarantines k1 (archived_meter)

    report = loop.worker().drain()

    [(_, reason)] = report.dead
    assert reason.startswith("OutputKeyTaken") and key in reason, reason
    assert not any(other in reason for other in others), reason
    assert loop.objects()[key] == body
    with loop.session() as session:
        run = session.exec(
            select(RemediationRun).where(RemediationRun.trigger == RunTrigger.QUARANTINE_RERUN)
        ).one()
        held = session.exec(select(QuarantinedRow).where(QuarantinedRow.run_id == run.id)).all()
        audit = session.exec(select(CorrectionAudit).where(CorrectionAudit.run_id == run.id)).all()
        outputs = session.exec(select(OutputObject).where(OutputObject.run_id == run.id)).all()
    assert run.status == "failed" and "OutputKeyTaken" in (run.error or ""), run.error
    assert held == [] and audit == []
    assert [(o.key, o.uploaded) for o in outputs if o.kind == "corrected"] == [(key, False)]


def test_a_kept_object_the_redo_makes_nothing_in_place_of_is_not_to_be_removed(
    loop: Loop, make_app: Callable[[Settings], Flask]
) -> None:
    """The reason for an object this try makes nothing in place of (`k1` quarantined now) said,
    as for a key it writes, "remove it only to have this try's output sent in its place":
    nothing would be. An operator following it (the object deleted, the task replayed) had
    the redo end done with `k1` quarantined while `k1-mfx1` stayed billed, and the next re-run
    billed it again. The reason now says its rows were probably billed, that removing it
    undoes nothing, and that they are not to be re-run."""
    stamp, action = _quarantined_then_queued(loop, make_app)
    source = f"quarantine-rerun-{action}"
    key = f"usage/corrected/rerun-{action}/{source}.corrected.r1.jsonl"
    _earlier_try(loop, action, source, key, _row(stamp, "cus_alice"))  # k1-mfx1 billed
    [meter] = [m for m in loop.sandbox.meters() if m["event_name"] == "tokens"]
    loop.sandbox.deactivate_meter(meter["id"])  # the redo quarantines k1: no corrected object

    [(_, reason)] = loop.worker().drain().dead

    assert reason.startswith(f"OutputKeyTaken: {key}: an earlier try"), reason
    assert "sent in its place" not in reason.replace("nothing would be sent in its place", "")
    for said in ("probably imported: its rows billed", "undoes nothing", "do not re-run its rows"):
        assert said in reason, reason
    assert loop.accepted() == ["k1-mfx1"]
    with loop.session() as session:
        alert = session.exec(select(Alert).where(Alert.severity == "critical")).one()
    assert "undoes nothing" in alert.message
