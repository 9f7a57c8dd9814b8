"""The whole loop over real sockets: a messy usage file goes in, Stripe (the sandbox) ends up
with every recoverable row exactly once, and every other row is in quarantine with a reason.

Two ways in: the sandbox playing Stripe's S3 connector (import sets, failed-records files,
snapshot events), and meterfix's bundled poller (v2 meter event stream, async error
reports as thin events). Both run on SQLite and PostgreSQL, against a moto S3 bucket.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from flask import Flask
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from sandbox.app import create_sandbox_app
from sandbox.client import SandboxAdmin
from sandbox.connector import set_data_errors
from sandbox.defaults import SANDBOX_API_KEY, SANDBOX_WEBHOOK_SECRET, sandbox_bases
from service.config import Settings
from service.db import make_engine
from service.models import CorrectionAudit, ImportSet, InboxEvent, QuarantinedRow, RemediationRun
from service.poller.passes import build_poller_deps, run_poll_pass
from service.runtime import Runtime
from service.worker.loop import InboxWorker
from tests.servers import serve_wsgi

BUCKET = "usage-bucket"
DAY = 86_400
RULES = '[customers]\n"acme-42" = "cus_acme"\n'


def messy_rows(now: int) -> list[dict[str, Any]]:
    """Eight rows: two valid, four correctable, two that must be quarantined."""
    base = {"event_name": "api_requests", "customer": "cus_alice", "value": "5"}
    rows = [
        {"identifier": "e1", "timestamp": now - 3600},
        {"identifier": "e2", "timestamp": (now - 7200) * 1000},  # milliseconds
        {"identifier": "e3", "timestamp": now - 60, "value": "1,234"},
        {"identifier": "e4", "timestamp": now - 60, "event_name": "API-Requests"},
        {"identifier": "e5", "timestamp": now - 60, "value": "abc"},
        {"identifier": "e6", "timestamp": now - 60, "customer": "acme-42"},  # mapped
        {"identifier": "e7", "timestamp": now - 40 * DAY},  # too old: never moved
        {"identifier": "e8", "timestamp": now - 30, "customer": "cus_bob", "value": "7"},
    ]
    return [{**base, **row} for row in rows]


RECOVERED = {"e1", "e8", "e2-mfx1", "e3-mfx1", "e4-mfx1", "e6-mfx1"}
QUARANTINED = {"e5": "meter_event_invalid_value", "e7": "timestamp_too_far_in_past"}


def render(rows: list[dict[str, Any]], fmt: str, delimiter: str = ",") -> bytes:
    """The rows as a usage file of format `fmt` (`csv` delimited by `delimiter`: any other
    than `,` makes a file Stripe fails whole, as it then finds no `event_name` column)."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
        writer.writerow(
            ["identifier", "timestamp", "event_name", "payload_stripe_customer_id", "payload_value"]
        )
        for r in rows:
            writer.writerow(
                [r["identifier"], r["timestamp"], r["event_name"], r["customer"], r["value"]]
            )
        return out.getvalue().encode()
    objects = [
        {
            "identifier": r["identifier"],
            "timestamp": r["timestamp"],
            "event_name": r["event_name"],
            "payload": {"stripe_customer_id": r["customer"], "value": r["value"]},
        }
        for r in rows
    ]
    if fmt == "json":
        return json.dumps(objects, indent=1).encode()
    return "".join(json.dumps(o) + "\n" for o in objects).encode()


@dataclass
class Loop:
    settings: Settings
    sandbox: SandboxAdmin
    sandbox_app: Flask
    service_url: str
    s3: Any

    engine: Engine

    def worker(self) -> InboxWorker:
        return InboxWorker(self.engine, self.settings)

    def drain(self) -> None:
        """Run the worker until nothing is due (tasks queue tasks)."""
        worker = self.worker()
        for _ in range(5):
            report = worker.drain()
            assert not report.dead, report.dead
            assert not report.retrying, report.retrying
            if not report.done:
                break

    def objects(self) -> dict[str, bytes]:
        listing = self.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        return {
            o["Key"]: self.s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
            for o in listing
        }

    def accepted(self) -> list[str]:
        return [str(e["identifier"]) for e in self.sandbox.meter_events()]

    def session(self) -> Session:
        return Session(self.engine)


@contextmanager
def running_loop(
    db_url: str,
    s3_endpoint: str,
    tmp_path: Path,
    make_app: Callable[[Settings], Flask],
    *,
    poller: str = "on",
    data_errors: str = "file",
) -> Iterator[Loop]:
    """moto bucket + sandbox (Stripe and its S3 connector) + the service, wired together."""
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    s3.create_bucket(Bucket=BUCKET)
    sandbox_app = create_sandbox_app(bucket_url=f"s3://{BUCKET}/usage", s3_endpoint_url=s3_endpoint)
    set_data_errors(sandbox_app.extensions["sandbox"].state, data_errors)
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    with serve_wsgi(sandbox_app) as sandbox:
        bases = sandbox_bases(sandbox.url)  # each Stripe host on its own URL, as at Stripe
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=db_url,
            bucket_url=f"s3://{BUCKET}/usage",
            s3_endpoint_url=s3_endpoint,
            stripe_api_key=SANDBOX_API_KEY,
            stripe_webhook_secrets=SANDBOX_WEBHOOK_SECRET,
            stripe_api_base=bases["api"],
            stripe_files_base=bases["files"],
            stripe_meter_events_base=bases["meter_events"],
            mfx_rules=str(rules),
            mfx_work_dir=str(tmp_path / "work"),
            mfx_poller=poller,
        )
        admin = SandboxAdmin(sandbox.url)
        admin.create_meter("api_requests")
        for customer in ("cus_alice", "cus_bob", "cus_acme"):
            admin.create_customer(customer)
        with serve_wsgi(make_app(settings)) as service:
            sandbox_app.extensions["sandbox"].webhook_url = f"{service.url}/webhooks"
            engine = make_engine(db_url)
            try:
                yield Loop(settings, admin, sandbox_app, service.url, s3, engine)
            finally:
                engine.dispose()


@pytest.fixture
def loop(
    db_url: str,
    s3_endpoint: str,
    tmp_path: Path,
    make_app: Callable[[Settings], Flask],
) -> Iterator[Loop]:
    with running_loop(db_url, s3_endpoint, tmp_path, make_app) as running:
        yield running


def _put(loop: Loop, name: str, body: bytes) -> str:
    key = f"usage/{name}"
    loop.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return key


def _assert_outcome(loop: Loop) -> None:
    accepted = loop.accepted()
    assert sorted(accepted) == sorted(RECOVERED), "every recoverable row billed exactly once"
    with loop.session() as session:
        quarantined = {q.identifier: q for q in session.exec(select(QuarantinedRow)).all()}
        audit = session.exec(select(CorrectionAudit)).all()
    assert {k: q.code for k, q in quarantined.items()} == QUARANTINED
    assert all(q.reason for q in quarantined.values())
    # lineage: every derived identifier that was billed points back at its source row
    lineage = {a.new_identifier: (a.identifier, a.source, a.row_number) for a in audit}
    for derived in RECOVERED - {"e1", "e8"}:
        original, source, row = lineage[derived]
        assert original == derived.removesuffix("-mfx1") and source and row >= 1
    quarantine_files = [
        body for key, body in loop.objects().items() if "/quarantine/" in key and "audit" not in key
    ]
    text = b"".join(quarantine_files).decode()
    assert "e5" in text and "e7" in text and "mfx_reason" in text


def _assert_repeat_changes_nothing(loop: Loop, again: Callable[[], None]) -> None:
    before_keys, before_events = loop.objects(), loop.accepted()
    with loop.session() as session:
        runs = len(session.exec(select(RemediationRun)).all())
    again()
    assert loop.objects() == before_keys
    assert loop.accepted() == before_events
    with loop.session() as session:
        assert len(session.exec(select(RemediationRun)).all()) == runs


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_connector_mode_fixes_a_messy_file(loop: Loop, fmt: str) -> None:
    _put(loop, f"2026-11-25.{fmt}", render(messy_rows(int(time.time())), fmt))
    events = loop.sandbox.connector_poll()  # Stripe imports the file; 6 rows fail
    assert [e["type"] for e in events] == ["data_management.import_set.succeeded"]
    assert sorted(loop.accepted()) == ["e1", "e8"]
    loop.drain()  # fetch failed records, remediate, upload corrected + quarantine
    with loop.session() as session:
        import_set = session.exec(select(ImportSet)).one()
    assert import_set.remediation_status == "done"
    corrected = [k for k in loop.objects() if k.startswith("usage/corrected/")]
    assert corrected and all(import_set.import_set_id in k for k in corrected)
    loop.sandbox.connector_poll()  # Stripe imports the corrected file
    _assert_outcome(loop)

    def again() -> None:
        loop.sandbox.connector_poll()
        event_id = events[0]["id"]
        loop.sandbox.deliver(event_id, f"{loop.service_url}/webhooks")  # re-delivery
        loop.drain()

    _assert_repeat_changes_nothing(loop, again)


def test_connector_whole_file_failure_is_repaired(loop: Loop) -> None:
    rows = messy_rows(int(time.time()))
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\n")  # and `event`, not event_name
    writer.writerow(["identifier", "timestamp", "event", "payload_stripe_customer_id", "value"])
    for r in rows:
        writer.writerow(
            [r["identifier"], r["timestamp"], r["event_name"], r["customer"], r["value"]]
        )
    _put(loop, "broken.csv", out.getvalue().encode())
    Path(loop.settings.mfx_rules).write_text(RULES + '[columns]\n"event" = "event_name"\n')
    events = loop.sandbox.connector_poll()
    assert [e["type"] for e in events] == ["data_management.import_set.failed"]
    assert loop.accepted() == []
    loop.drain()  # repair (delimiter, header aliases) and remediate every row
    events = loop.sandbox.connector_poll()
    # e6's customer only fails at Stripe: its row comes back in a failed-records file
    assert [e["type"] for e in events] == ["data_management.import_set.succeeded"]
    loop.drain()
    loop.sandbox.connector_poll()
    # nothing was accepted before, so the valid rows come back with derived ids too; e3's
    # "1,234" is ambiguous in a ;-delimited file (its `,` may be the decimal mark: 1.234)
    expected = {"e1-mfx1", "e8-mfx1", "e2-mfx1", "e4-mfx1", "e6-mfx2"}
    assert sorted(loop.accepted()) == sorted(expected)
    with loop.session() as session:
        held = session.exec(select(QuarantinedRow)).all()
    ambiguous = {"e3": "meter_event_invalid_value"}
    assert {q.identifier: q.code for q in held} == {**QUARANTINED, **ambiguous}
    [e3] = [q for q in held if q.identifier == "e3"]
    assert "decimal mark" in e3.reason and "'1,234'" in e3.reason


def test_connector_mode_leaves_rows_fixed_by_hand_before_meterfix_ran_to_the_connector(
    loop: Loop,
) -> None:
    """Stripe's connector refused rows of a file (its failed-records file); before meterfix
    handled the file, the customer fixed one row by hand and uploaded the file again, and
    the connector billed the new version. meterfix then corrected that row too and sent it
    as `e3-mfx1`: billed twice. The rows the new version holds are left to the connector;
    the others are remediated as before."""
    rows = messy_rows(int(time.time()))
    key = _put(loop, "day.csv", render(rows, "csv"))
    events = loop.sandbox.connector_poll()
    assert [e["type"] for e in events] == ["data_management.import_set.succeeded"]
    time.sleep(1)  # S3 and Stripe stamp whole seconds: uploaded after the import set
    fixed = [{**row, "value": "1234"} if row["identifier"] == "e3" else row for row in rows]
    loop.s3.put_object(Bucket=BUCKET, Key=key, Body=render(fixed, "csv"))
    loop.sandbox.connector_poll()  # the new version: e3 billed (e1 and e8 deduped)
    assert sorted(loop.accepted()) == ["e1", "e3", "e8"]
    loop.drain()
    loop.sandbox.connector_poll()
    billed = sorted(loop.accepted())
    assert billed == sorted({"e1", "e3", "e8"} | (RECOVERED - {"e3-mfx1"}))  # each once
    with loop.session() as session:
        held = {q.identifier for q in session.exec(select(QuarantinedRow)).all()}
        tasks = session.exec(
            select(InboxEvent)
            .where(InboxEvent.event_type == "meterfix.remediate.import_set_errors")
            .order_by(col(InboxEvent.id))
        ).all()
    # the new version holds all six refused rows: the first file's run leaves them; those
    # it holds unfixed were refused again, and come back in its own failed-records file
    first, second = (str(task.outcome) for task in tasks)
    left = "; 6 left to Stripe's connector: a version of the file uploaded since holds them"
    assert first.endswith(left) and " left " not in second
    assert held == set(QUARANTINED)


def test_bundled_poller_fixes_a_messy_file(loop: Loop) -> None:
    _put(loop, "2026-11-25.csv", render(messy_rows(int(time.time())), "csv"))
    runtime = Runtime(loop.settings)
    try:
        deps = build_poller_deps(runtime)
        report = run_poll_pass(deps)  # 3 valid rows sent (e6's customer is unknown to Stripe)
        assert (report.ran, report.sent, report.failed_rows) == (True, 3, 5), report
        loop.drain()  # remediate the 5 rows our validation rejected
        loop.sandbox_app.extensions["sandbox"].flush_reports()  # Stripe reports e6 async
        loop.drain()  # the error report is about our row: remediate it from the object
        with loop.session() as session:
            inbox = session.exec(select(InboxEvent).where(col(InboxEvent.style) != "task")).all()
        assert [e.event_type for e in inbox] == ["v1.billing.meter.error_report_triggered"]
        run_poll_pass(deps)  # import both corrected files
        loop.sandbox_app.extensions["sandbox"].flush_reports()
        loop.drain()
        _assert_outcome(loop)

        def again() -> None:
            run_poll_pass(deps)
            loop.sandbox_app.extensions["sandbox"].flush_reports()
            loop.drain()

        _assert_repeat_changes_nothing(loop, again)
    finally:
        runtime.close()
