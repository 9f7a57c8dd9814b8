"""Remediation tasks on their own: inputs that cannot be had, failures half-way, reports about
rows that are not ours. Real sandbox (Files API, meters), a file:// bucket, both databases."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
import stripe
from flask import Flask
from sqlmodel import Session, select

from sandbox.delivery import delivery_body
from sandbox.events import build_error_report_event, build_import_set_event
from service.adapters.bucket import open_bucket
from service.config import Settings
from service.db import make_engine
from service.models import (
    Alert,
    BucketObject,
    CorrectionAudit,
    ErrorReport,
    ImportedRow,
    InboxEvent,
    QuarantinedRow,
    RemediationRun,
)
from service.worker.loop import InboxWorker
from tests.conftest import SandboxServer
from tests.servers import serve_wsgi

FAILED_RECORDS = (
    "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
    "a1,{ms},api_requests,cus_1,5,timestamp_in_future\n"
    'a2,{s},api_requests,cus_1,"1,234",meter_event_invalid_value\n'
    "a3,{s},api_requests,cus_1,abc,meter_event_invalid_value\n"
)


class Service:
    def __init__(self, settings: Settings, sandbox: SandboxServer, url: str) -> None:
        self.settings, self.sandbox, self.url = settings, sandbox, url
        self.engine = make_engine(settings.database_url)

    def deliver(self, event: dict[str, object]) -> str:
        stored = self.sandbox.admin.add_event(event)
        assert self.sandbox.admin.deliver(stored["id"], f"{self.url}/webhooks")["status"] == 200
        return str(stored["id"])

    def drain(self) -> None:
        InboxWorker(self.engine, self.settings).drain()

    def rows(self, model: type) -> list[object]:
        with Session(self.engine) as session:
            return list(session.exec(select(model)).all())


@pytest.fixture
def service(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> object:
    sandbox_server.admin.create_meter("api_requests")
    rules = tmp_path / "rules.toml"
    rules.write_text('[customers]\n"acme-42" = "cus_acme"\n')
    settings = make_settings(
        mfx_rules=str(rules),
        database_url=db_url,
        stripe_api_key=sandbox_server.api_key,
        stripe_webhook_secrets=sandbox_server.webhook_secret,
        stripe_api_base=sandbox_server.bases["api"],
        stripe_files_base=sandbox_server.bases["files"],
        stripe_meter_events_base=sandbox_server.bases["meter_events"],
        mfx_work_dir=str(tmp_path / "work"),
    )
    with serve_wsgi(make_app(settings)) as running:
        svc = Service(settings, sandbox_server, running.url)
        yield svc
        svc.engine.dispose()


def _import_set_with_errors(svc: Service, impset: str) -> dict[str, object]:
    now = int(time.time()) - 60
    content = FAILED_RECORDS.format(ms=now * 1000, s=now)
    file = svc.sandbox.admin.upload_file(content, "failed_records.csv", "data_management")
    body = {
        "id": impset,
        "object": "data_management.import_set",
        "status": "succeeded_with_errors",
        "result": {"errors": {"file": file["id"], "row_count": 3}},
    }
    return build_import_set_event("data_management.import_set.succeeded", body)


def test_a_failed_upload_is_retried_and_recorded_once(service: Service) -> None:
    bucket = Path(service.settings.bucket_url.removeprefix("file://"))
    bucket.rmdir()  # made by `make_settings`, as `make run` makes it
    bucket.write_text("not a directory")  # every upload fails
    service.deliver(_import_set_with_errors(service, "impset_retry"))
    service.drain()
    with Session(service.engine) as session:
        task = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).one()
        run = session.exec(select(RemediationRun)).one()
    assert (task.status, task.attempts) == ("pending", 1)
    assert task.last_error and run.status == "failed"  # until its retry starts it again
    assert run.error and run.finished_at is not None
    # The audit was loaded beside the uploads, and the run failed only once the load had ended.
    assert sorted(a.new_identifier for a in service.rows(CorrectionAudit)) == ["a1-mfx1", "a2-mfx1"]
    assert not [t for t in threading.enumerate() if t.name.startswith("meterfix-audit-load")]
    bucket.unlink()  # the bucket comes back
    bucket.mkdir()
    with Session(service.engine) as session:
        task = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).one()
        task.next_attempt_at = None
        session.add(task)
        session.commit()
    service.drain()
    runs = service.rows(RemediationRun)
    assert [(r.status, r.corrected, r.quarantined) for r in runs] == [("done", 2, 1)]
    audit = service.rows(CorrectionAudit)
    assert sorted(a.new_identifier for a in audit) == ["a1-mfx1", "a2-mfx1"]  # no duplicates
    corrected = list(bucket.glob("corrected/impset_retry/*.corrected.r1.csv"))
    assert len(corrected) == 1 and "a2-mfx1" in corrected[0].read_text()


def _deliver_failed_records(service: Service, impset: str, content: str | bytes, rows: int) -> None:
    """An import set with errors whose failed-records file holds `content`."""
    file = service.sandbox.admin.upload_file(content, "failed_records.csv", "data_management")
    body = {
        "id": impset,
        "object": "data_management.import_set",
        "status": "succeeded_with_errors",
        "result": {"errors": {"file": file["id"], "row_count": rows}},
    }
    service.deliver(build_import_set_event("data_management.import_set.succeeded", body))


def _remediated(service: Service, impset: str, content: str, rows: int) -> RemediationRun:
    """The import set's failed records delivered and remediated: its task done at the first
    try, without an error; its run."""
    _deliver_failed_records(service, impset, content, rows)
    service.drain()
    with Session(service.engine) as session:
        task = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).one()
    assert (task.status, task.last_error) == ("done", None)
    [run] = service.rows(RemediationRun)
    assert isinstance(run, RemediationRun)
    return run


def test_a_run_whose_input_turns_out_unreadable_part_way_is_failed_with_the_reason(
    service: Service,
) -> None:
    """A byte that is not UTF-8 on the third row: the task ended ("not remediated", a
    critical alert), but its run stayed `running`, without an error or an end, for ever (the
    dashboard's runs list showed it as still going)."""
    now = int(time.time()) - 60
    content = (
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
        f"a1,{now * 1000},api_requests,cus_1,5,timestamp_in_future\n"
        f"caf\xe9,{now * 1000},api_requests,cus_1,5,timestamp_in_future\n"
    ).encode("latin-1")
    _deliver_failed_records(service, "impset_latin1", content, 2)
    service.drain()
    with Session(service.engine) as session:
        task = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).one()
    assert task.status == "done" and (task.outcome or "").startswith("not remediated: not UTF-8")
    [run] = service.rows(RemediationRun)
    assert (run.status, run.finished_at is not None) == ("failed", True)
    assert run.error == "not UTF-8 text: undecodable byte at offset 145"


def test_values_longer_than_their_columns_are_cut_and_every_row_remediated(
    service: Service,
) -> None:
    """An unknown error code past 255 characters, an identifier past 512, a customer past
    255: PostgreSQL refused the load of the run's quarantined rows (or audit), the task was
    retried until dead, and no row of the file was ever corrected (a1 never billed)."""
    now = int(time.time()) - 60
    long_code, long_id, long_customer = "e" * 300, "x" * 600, "c" * 400
    content = (
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
        f"a1,{now * 1000},api_requests,cus_1,5,timestamp_in_future\n"
        f"a2,{now},api_requests,cus_1,5,{long_code}\n"
        f"a3,{now * 1000},api_requests,cus_1,5,{long_code}\n"
        f"{long_id},{now * 1000},api_requests,cus_1,5,timestamp_in_future\n"
        f"a5,{now},api_requests,{long_customer},5,meter_event_customer_not_found\n"
    )
    run = _remediated(service, "impset_long", content, 5)
    assert (run.status, run.corrected, run.quarantined) == ("done", 2, 3)
    audit = {a.identifier: a for a in service.rows(CorrectionAudit)}
    assert sorted(audit) == ["a1", "a3"]
    assert audit["a3"].code == long_code[:255]
    quarantined = {q.row_number: q for q in service.rows(QuarantinedRow)}
    assert sorted(quarantined) == [2, 4, 5]
    assert (quarantined[2].code, quarantined[4].identifier) == (long_code[:255], long_id[:512])
    assert quarantined[5].customer == long_customer[:255]
    assert quarantined[4].record["identifier"] == long_id  # the row itself, in full
    assert "is 600 characters long" in (quarantined[4].reason or "")


def test_a_nul_in_a_stored_text_is_held_as_a_replacement_character_and_every_row_remediated(
    service: Service,
) -> None:
    """README (Nothing lost): what the database cannot hold is never what fails a file. A NUL
    in a quarantined row's identifier, customer, meter or code failed the load of the run on
    PostgreSQL (`invalid byte sequence for encoding "UTF8": 0x00`), and the task was retried
    until dead, a1 never billed; SQLite, where a value past its column was cut in the same
    load, stored `j11\x00` as `j11` (another row's identifier) and `cus\x00x` as `cus`. Each is
    held as U+FFFD on both; the record keeps the row as it came."""
    now = int(time.time()) - 60
    content = (
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
        f"a1,{now * 1000},api_requests,cus_1,5,timestamp_in_future\n"
        f"j11\x00,{now * 1000},api_requests,cus_1,5,timestamp_in_future\n"
        f"a3,{now},api_requests,cus\x00x,5,meter_event_customer_not_found\n"
        f"a4,{now},api\x00requests,cus_1,5,no_meter\n"
        f"a5,{now},api_requests,cus_1,5,weird\x00code\n"
        f"{'x' * 600},{now * 1000},api_requests,cus_1,5,timestamp_in_future\n"
    )
    run = _remediated(service, "impset_nul", content, 6)
    assert (run.status, run.corrected, run.quarantined) == ("done", 1, 5)
    assert [a.identifier for a in service.rows(CorrectionAudit)] == ["a1"]
    held = {q.row_number: q for q in service.rows(QuarantinedRow)}
    assert sorted(held) == [2, 3, 4, 5, 6]
    assert held[2].identifier == "j11\ufffd"
    assert held[2].record["identifier"] == "j11\x00"  # the row as it came
    assert held[3].customer == "cus\ufffdx"
    assert held[4].meter == "api\ufffdrequests"
    assert held[5].code == "weird\ufffdcode"
    assert held[6].identifier == "x" * 512
    assert not [
        q for q in held.values() if "\x00" in f"{q.identifier}{q.customer}{q.meter}{q.code}"
    ]


def test_a_run_logs_where_its_time_went(service: Service, caplog: pytest.LogCaptureFixture) -> None:
    service.deliver(_import_set_with_errors(service, "impset_stages"))
    with caplog.at_level(logging.INFO, logger="meterfix"):
        service.drain()
    done = [
        r.msg.fields
        for r in caplog.records
        if getattr(r.msg, "event", "") == "remediation.run_done"
    ]
    assert len(done) == 1
    stages = done[0]["stages"]
    assert set(stages) == {"download", "lineage", "remediate", "upload", "database"}
    assert all(isinstance(seconds, float) and seconds > 0 for seconds in stages.values())
    # The database stage's parts: the corrections and the quarantined row staged and loaded
    # (the run's row and outputs are the rest).
    parts = done[0]["database_parts"]
    assert set(parts) == {"audit_staging", "audit_load", "quarantine_staging", "quarantine_load"}
    assert done[0]["corrected"] > 0 and done[0]["quarantined"] > 0
    assert all(isinstance(seconds, float) and seconds > 0 for seconds in parts.values())
    assert sum(parts.values()) <= stages["database"] + 0.001  # the stage rounded to 1 ms


def test_a_failed_import_set_without_source_raises_an_alert(service: Service) -> None:
    body = {
        "id": "impset_lost",
        "object": "data_management.import_set",
        "status": "failed",
        "failed_reason": "Missing required column: event_name",
    }
    service.deliver(build_import_set_event("data_management.import_set.failed", body))
    service.drain()
    alert = service.rows(Alert)[0]
    assert alert.severity == "critical" and "impset_lost" in alert.subject
    with Session(service.engine) as session:
        task = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).one()
    assert task.status == "done" and "not remediated" in (task.outcome or "")


def test_a_thin_notification_the_sdk_cannot_read_is_stored_and_its_event_fetched_by_id(
    service: Service,
) -> None:
    """A signed, well-formed error-report notification without `related_object` (the SDK's
    notification class needs it): answered 400, never stored, the report lost when Stripe
    stopped retrying. It is stored; the worker fetches its event by id and records the
    report. A full event the SDK cannot read either is dead-lettered at once, with a reason,
    not retried for 45 minutes as if transient."""
    errors = [("meter_event_customer_not_found", "No customer cus_x", "zz-1")]
    stored = service.sandbox.admin.add_event(build_error_report_event("mtr_other", errors))
    thin = {k: v for k, v in json.loads(delivery_body(stored)).items() if k != "related_object"}
    body = json.dumps(thin)
    header = stripe.WebhookSignature.generate_signature_header(
        body, service.settings.stripe_webhook_secrets[0]
    )
    answer = requests.post(
        f"{service.url}/webhooks",
        data=body,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    service.drain()
    [report] = service.rows(ErrorReport)
    assert (report.event_id, report.meter_id, report.status) == (
        stored["id"],
        "mtr_other",
        "unmatched",
    )
    [event] = service.rows(InboxEvent)
    assert (event.status, event.attempts) == ("done", 1)
    broken = build_error_report_event("mtr_other", errors)
    broken["data"] = None
    dead = service.deliver(broken)
    service.drain()
    with Session(service.engine) as session:
        row = session.exec(select(InboxEvent).where(InboxEvent.event_id == dead)).one()
    assert (row.status, row.attempts) == ("dead", 1), (row.status, row.last_error)
    assert str(row.last_error).startswith(f"EventUnreadable: the full event {dead} cannot be read")


def test_a_report_about_rows_that_are_not_ours_is_kept_for_the_digest(service: Service) -> None:
    errors = [("meter_event_customer_not_found", "No customer cus_x", "zz-1")]
    service.deliver(build_error_report_event("mtr_other", errors))
    service.drain()
    report = service.rows(ErrorReport)[0]
    assert report.status == "unmatched"
    assert [e.style for e in service.rows(InboxEvent)] == ["thin"]  # no task was queued
    # Stripe refused usage meterfix cannot remediate: a person is told (it was told nothing)
    [alert] = service.rows(Alert)
    assert (alert.kind, alert.severity, alert.status) == (
        "error_report.unmatched",
        "warning",
        "open",
    )
    assert alert.subject == (
        "Stripe refused 1 meter event (mtr_other) that meterfix cannot trace to a bucket row"
    )
    assert alert.message.startswith(
        f"Error report {report.event_id}: meter_event_customer_not_found x1. None of its sampled"
    )
    assert alert.detail == {
        "event_id": report.event_id,
        "meter_id": "mtr_other",
        "counts": {"meter_event_customer_not_found": 1},
    }
    service.deliver(build_error_report_event("mtr_other", errors))  # another report, same meter
    service.drain()
    [alert] = service.rows(Alert)
    assert alert.count == 2


def test_replaying_a_finished_task_changes_nothing(service: Service) -> None:
    service.deliver(_import_set_with_errors(service, "impset_twice"))
    service.drain()
    task_id = "mfx_task_import_set_errors_impset_twice"
    bucket = Path(service.settings.bucket_url.removeprefix("file://"))
    before = {p: p.stat().st_mtime_ns for p in bucket.rglob("*") if p.is_file()}
    from service.worker.inbox import requeue

    assert requeue(service.engine, task_id)
    service.drain()
    assert {p: p.stat().st_mtime_ns for p in bucket.rglob("*") if p.is_file()} == before
    assert len(service.rows(CorrectionAudit)) == 2
    shutil.rmtree(bucket)


def _run_alerts(service: Service) -> list[Alert]:
    with Session(service.engine) as session:
        return list(session.exec(select(Alert).where(Alert.kind == "remediation.run")).all())


def test_a_runs_alert_lost_to_a_crash_is_raised_by_the_retry_and_never_counted_twice(
    service: Service,
) -> None:
    """A worker killed after the run was recorded done and before its alert was raised: the
    retry found the run done and returned, and the alert (1,200 rows quarantined: critical)
    was never raised. The state such a crash leaves (the run done, no alert) is made by
    deleting the alert; a retry raises it once, and a replay while it stands (acknowledged)
    neither counts it again nor reopens it."""
    from service.worker.inbox import requeue

    service.deliver(_import_set_with_errors(service, "impset_alert"))
    service.drain()
    task_id = "mfx_task_import_set_errors_impset_alert"
    [alert] = _run_alerts(service)
    with Session(service.engine) as session:
        session.delete(session.get(Alert, alert.id))
        session.commit()
    assert requeue(service.engine, task_id)
    service.drain()
    [again] = _run_alerts(service)
    assert (again.alert_key, again.subject, again.count) == (alert.alert_key, alert.subject, 1)
    assert again.links == alert.links  # the run's objects named, as the first time
    with Session(service.engine) as session:
        stored = session.get(Alert, again.id)
        assert stored is not None
        stored.status = "acknowledged"
        session.add(stored)
        session.commit()
    assert requeue(service.engine, task_id)
    service.drain()
    [kept] = _run_alerts(service)
    assert (kept.status, kept.count) == ("acknowledged", 1)


def test_a_failed_import_set_is_traced_to_our_object_by_file_name(service: Service) -> None:
    now = int(time.time()) - 60
    bucket = Path(service.settings.bucket_url.removeprefix("file://"))
    (bucket / "in").mkdir(parents=True)
    content = (
        "identifier;timestamp;event_name;payload_stripe_customer_id;payload_value\n"
        f"b1;{now};api_requests;cus_1;5\nb2;{now * 1000};api_requests;cus_1;3\n"
    )
    (bucket / "in" / "usage-7.csv").write_text(content)
    with Session(service.engine) as session:  # what the poller (index mode) recorded
        session.add(BucketObject(key="in/usage-7.csv", etag="e1", size=10, status="indexed"))
        session.commit()
    stripe_copy = service.sandbox.admin.upload_file(content, "usage-7.csv")  # what it took
    body = {
        "id": "impset_by_name",
        "object": "data_management.import_set",
        "status": "failed",
        "failed_reason": "Unparseable file",
        "file": stripe_copy["id"],
    }
    service.deliver(build_import_set_event("data_management.import_set.failed", body))
    service.drain()
    run = service.rows(RemediationRun)[0]
    assert (run.source, run.status, run.valid, run.corrected) == ("in/usage-7.csv", "done", 1, 1)
    corrected = (bucket / "corrected" / "impset_by_name").glob("*.corrected.r1.csv")
    text = next(corrected).read_text()
    assert "b1-mfx1" in text and "b2-mfx1" in text and f",{now}," in text


def test_a_failed_import_set_is_traced_only_to_an_object_holding_what_stripe_took(
    service: Service,
) -> None:
    """Dated folders hold files of one name. The file Stripe failed is the one whose content
    is Stripe's copy, not the newest of that name: every row of a failed file is re-sent, so
    tracing it to another day's file (imported, billed) re-sent that whole day's usage."""
    now = int(time.time()) - 60
    bucket = Path(service.settings.bucket_url.removeprefix("file://"))
    header = "identifier;timestamp;event_name;payload_stripe_customer_id;payload_value\n"
    failed = header + f"f1;{now};api_requests;cus_1;5\n"  # `;`: Stripe failed the whole file
    billed = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
    billed += f"d1,{now},api_requests,cus_1,7\n"  # the next day's file, imported
    for day, content in (("2026-11-30", failed), ("2026-12-01", billed)):
        (bucket / day).mkdir(parents=True)
        (bucket / day / "usage.csv").write_text(content)
    with Session(service.engine) as session:  # the poller saw both, the billed one last
        for minute, day in enumerate(("2026-11-30", "2026-12-01")):
            seen = datetime.fromtimestamp(now - 600 + 60 * minute, UTC)
            obj = BucketObject(key=f"{day}/usage.csv", etag=day, size=10, first_seen=seen)
            session.add(obj)
        session.commit()
    stripe_copy = service.sandbox.admin.upload_file(failed, "usage.csv")
    body = {"id": "impset_day", "status": "failed", "file": stripe_copy["id"]}
    service.deliver(build_import_set_event("data_management.import_set.failed", body))
    service.drain()

    [run] = service.rows(RemediationRun)
    assert (run.source, run.input_rows) == ("2026-11-30/usage.csv", 1)
    [corrected] = (bucket / "corrected" / "impset_day").glob("*.corrected.r1.csv")
    text = corrected.read_text()
    assert "f1-mfx1" in text and "d1" not in text


def test_a_failed_import_set_naming_an_object_overwritten_since_reads_stripes_copy(
    service: Service,
) -> None:
    """The import set names its object, but the object was overwritten after Stripe failed it
    (the exporter fixed the file and uploaded it again: Stripe imports and bills that version).
    Every row of a failed file is re-sent, so the failed file is Stripe's copy, not what the
    key holds now (whose rows were all sent again). A row of the failed file that the new
    version holds too (f1) is not: Stripe's connector takes the new version whole, and f1
    with it (re-sent as `f1-mfx1`, it was billed twice); f3, which the new version dropped,
    is."""
    now = int(time.time()) - 60
    bucket = Path(service.settings.bucket_url.removeprefix("file://"))
    header = "identifier;timestamp;event_name;payload_stripe_customer_id;payload_value\n"
    failed = header + f"f1;{now};api_requests;cus_1;5\nf3;{now};api_requests;cus_1;7\n"
    fixed = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
    fixed += f"f1,{now},api_requests,cus_1,5\nf2,{now},api_requests,cus_1,6\n"
    bucket.mkdir(parents=True, exist_ok=True)
    (bucket / "daily.csv").write_text(fixed)  # the key holds the fixed version now
    stripe_copy = service.sandbox.admin.upload_file(failed, "daily.csv")
    body = {
        "id": "impset_fixed",
        "status": "failed",
        "file": stripe_copy["id"],
        "source_object": "daily.csv",
    }
    service.deliver(build_import_set_event("data_management.import_set.failed", body))
    service.drain()

    [run] = service.rows(RemediationRun)
    assert (run.source, run.input_rows) == (stripe_copy["id"], 1)
    [corrected] = (bucket / "corrected" / "impset_fixed").glob("*.corrected.r1.csv")
    assert [line.split(",")[0] for line in corrected.read_text().splitlines()] == [
        "identifier",
        "f3-mfx1",
    ]
    [task] = [e for e in service.rows(InboxEvent) if e.event_type.endswith("import_set_failed")]
    assert task.outcome is not None
    assert task.outcome.endswith(
        "; 1 left to Stripe's connector: a version of the file uploaded since holds them"
    )


def test_a_failed_import_set_whose_object_changed_and_no_copy_kept_is_not_guessed(
    service: Service,
) -> None:
    """Without Stripe's copy to hold it against, the named object stands for the failed file
    only if it was not written after the failure: a newer version is another file."""
    now = int(time.time())
    bucket = Path(service.settings.bucket_url.removeprefix("file://"))
    bucket.mkdir(parents=True, exist_ok=True)
    (bucket / "later.csv").write_text(
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
        f"g1,{now - 60},api_requests,cus_1,5\n"
    )
    body = {"id": "impset_gone", "status": "failed", "source_object": "later.csv"}
    event = build_import_set_event("data_management.import_set.failed", body, created=now - 3600)
    service.deliver(event)
    service.drain()
    assert service.rows(RemediationRun) == []
    [alert] = service.rows(Alert)
    assert "changed after the import failed" in alert.message


def test_a_source_without_rows_raises_an_alert(service: Service) -> None:
    stripe_copy = service.sandbox.admin.upload_file("not,usage\n", "lost.csv")
    body = {"id": "impset_empty", "status": "failed", "file": stripe_copy["id"]}
    service.deliver(build_import_set_event("data_management.import_set.failed", body))
    service.drain()
    alert = service.rows(Alert)[0]
    assert "no usage rows" in alert.message and "impset_empty" in alert.subject


def test_a_report_counting_more_rows_than_we_can_find_is_partial(service: Service) -> None:
    now = int(time.time()) - 60
    bucket = Path(service.settings.bucket_url.removeprefix("file://"))
    bucket.mkdir(parents=True, exist_ok=True)
    (bucket / "p.csv").write_text(
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
        f"p1,{now},api_requests,acme-42,5\np2,{now},api_requests,cus_ok,5\n"
    )
    etag = _etag(service, "p.csv")
    with Session(service.engine) as session:  # what the poller recorded for p.csv
        session.add(BucketObject(key="p.csv", etag=etag, size=10, status="imported"))
        for n, ident in enumerate(("p1", "p2"), start=1):
            session.add(ImportedRow(identifier=ident, object_key="p.csv", etag=etag, row_number=n))
        session.commit()
    event = build_error_report_event(
        service.sandbox.admin.meters()[0]["id"],
        [("meter_event_customer_not_found", "No such customer: acme-42", "p1")],
    )
    event["data"]["reason"]["error_count"] = 5  # Stripe counted rows we never saw
    event["data"]["reason"]["error_types"][0]["error_count"] = 5
    service.deliver(event)
    service.drain()
    report = service.rows(ErrorReport)[0]
    assert report.status == "partial"
    [alert] = [a for a in service.rows(Alert) if a.kind == "error_report.partial"]
    assert alert.severity == "warning" and "found 1 of 5" in alert.subject
    # it said the other rows were in no object meterfix saw: p2 is in p.csv, a row of a
    # customer no sample names, which only Stripe can tell from a billed one
    assert alert.message.startswith("the other rows cannot be told: no other row of the ")
    assert "known only from a sampled row naming it" in alert.message
    audit = service.rows(CorrectionAudit)
    assert [(a.identifier, a.new_identifier, a.after) for a in audit] == [
        ("p1", "p1-mfx1", "cus_acme")
    ]


def _etag(service: Service, key: str) -> str:
    """The object's ETag as the poller lists it (the report reads only that version)."""
    found = open_bucket(service.settings).head(key)
    assert found is not None
    return found.etag


def test_lineage_is_looked_up_in_batches(db_url: str, tmp_path: Path) -> None:
    """Every batch's identifiers are looked up (one array parameter on PostgreSQL)."""
    from remediation.identifiers import Ancestor
    from remediation.rules import load_rules
    from service.jobs.input_lineage import LOOKUP_BATCH, run_lineage

    count = LOOKUP_BATCH * 2 + 7  # more than one IN (...) batch
    path = tmp_path / "corrected.csv"
    lines = [f"x{n}-r1,1764000000,api_requests,cus_1,1" for n in range(count)]
    path.write_text(
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
        + "\n".join(lines)
        + "\n"
    )
    engine = make_engine(db_url)
    with Session(engine) as session:
        session.add(RemediationRun(run_key="k", trigger="cli", source="s"))
        session.commit()
        for n in (0, LOOKUP_BATCH + 1, count - 1):  # one per batch
            session.add(
                CorrectionAudit(
                    run_id=1,
                    source="s",
                    row_number=n,
                    identifier=f"x{n}",
                    new_identifier=f"x{n}-r1",
                    code=f"code{n}",
                    rule="r",
                    field="f",
                )
            )
        session.commit()
    generation, found, _ = run_lineage(engine, path, load_rules(None), "corrected.csv", 1)
    engine.dispose()
    assert found.ancestors == {
        f"x{n}-r1": Ancestor(f"x{n}", f"code{n}", 1) for n in (0, LOOKUP_BATCH + 1, count - 1)
    }  # the other `x…-r1` rows are not ours: no lineage says so
    assert generation == 2  # above the generation that wrote them


def test_corrections_are_found_by_any_identifier_text(db_url: str) -> None:
    """The one-parameter look-up (a JSON list on SQLite, an array on PostgreSQL) finds
    identifiers holding quotes, backslashes, commas, braces and non-ASCII text, and only
    those asked for."""
    from service.jobs.store.lineage import corrections_writing

    odd = ['a"b', "c\\d", "e,f", "{g}", "ü–h", "i'j", "k l", "[1]"]
    engine = make_engine(db_url)
    with Session(engine) as session:
        run = RemediationRun(run_key="k", trigger="cli", source="s", generation=3)
        session.add(run)
        session.commit()
        assert run.id is not None
        for n, identifier in enumerate([*odd, "not-asked"]):
            session.add(
                CorrectionAudit(
                    run_id=run.id,
                    source="s",
                    row_number=n,
                    identifier=f"o{n}",
                    new_identifier=identifier,
                    code="c",
                    rule="r",
                    field="f",
                )
            )
        session.commit()
    found = corrections_writing(engine, [*odd, "absent"])
    engine.dispose()
    assert [
        (audit.new_identifier, audit.identifier, generation) for audit, generation in found
    ] == [(identifier, f"o{n}", 3) for n, identifier in enumerate(odd)]


@pytest.mark.parametrize("copy", ["kept", "gone"])
def test_failed_records_held_by_a_later_version_of_the_object_are_left_to_stripe(
    service: Service, copy: str
) -> None:
    """The import set names its object, and the bucket holds a version written after Stripe
    took it: a1 and a2 fixed by hand (Stripe's connector bills them from it), a3 dropped. Its
    failed records a1 and a2 are left to the connector (re-sent, they were billed twice); a3 is
    remediated. Stripe's copy of the file it took tells the versions apart; when that copy
    cannot be had (`gone`), the object's time alone does: the failed records are remediated all
    the same, not held up."""
    now = int(time.time()) - 60
    bucket = Path(service.settings.bucket_url.removeprefix("file://"))
    bucket.mkdir(parents=True, exist_ok=True)
    header = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
    taken = header + f"a1,{now * 1000},api_requests,cus_1,5\na2,{now},api_requests,cus_1,x\n"
    fixed = header + f"a1,{now},api_requests,cus_1,5\na2,{now},api_requests,cus_1,1234\n"
    (bucket / "daily.csv").write_text(fixed)
    later = time.time() + 5  # written after Stripe's event
    os.utime(bucket / "daily.csv", (later, later))
    source = service.sandbox.admin.upload_file(taken, "daily.csv")["id"]
    event = _import_set_with_errors(service, "impset_later")
    event["data"]["object"].update(  # type: ignore[index]
        {"source_object": "daily.csv", "file": source if copy == "kept" else "file_gone"}
    )
    service.deliver(event)
    service.drain()

    [run] = service.rows(RemediationRun)
    assert (run.input_rows, run.quarantined) == (1, 1)  # a3 only
    assert [q.identifier for q in service.rows(QuarantinedRow)] == ["a3"]
    [task] = [e for e in service.rows(InboxEvent) if e.event_type.endswith("import_set_errors")]
    assert task.status == "done"
    assert str(task.outcome).endswith(
        "; 2 left to Stripe's connector: a version of the file uploaded since holds them"
    )
