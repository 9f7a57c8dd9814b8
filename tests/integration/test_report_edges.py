"""Stripe events and error reports in shapes Stripe or a customer can produce but the happy
path never does: an object a report names that became unreadable since, an import set that
counts failed records without naming their file, a validation window at the calendar's edge,
a file id the Files API would never take. Real sandbox (events and Files API), a file://
bucket, both databases."""

# ruff: noqa: F811  (the fixture imported from the module that defines it)
from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from sandbox.events import build_error_report_event, build_import_set_event
from service.models import (
    Alert,
    BucketObject,
    CorrectionAudit,
    ErrorReport,
    ImportedRow,
    ImportSet,
    InboxEvent,
)
from tests.integration.test_remediation_tasks import Service, _etag, service  # noqa: F401

HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
NOT_FOUND = "meter_event_customer_not_found"


def _bucket(svc: Service) -> Path:
    path = Path(svc.settings.bucket_url.removeprefix("file://"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _imported(svc: Service, key: str, identifiers: list[str], status: str = "imported") -> None:
    """What the poller records of the version of `key` the bucket holds now."""
    etag = _etag(svc, key)
    with Session(svc.engine) as session:
        session.add(BucketObject(key=key, etag=etag, size=10, status=status))
        for n, identifier in enumerate(identifiers, start=1):
            row = ImportedRow(identifier=identifier, object_key=key, etag=etag, row_number=n)
            session.add(row)
        session.commit()


def _report(svc: Service, identifiers: list[str]) -> dict[str, object]:
    meter = svc.sandbox.admin.meters()[0]["id"]
    errors = [(NOT_FOUND, "No such customer: acme-42", i) for i in identifiers]
    return build_error_report_event(meter, errors)


def _row(svc: Service, event_id: str) -> InboxEvent:
    with Session(svc.engine) as session:
        return session.exec(select(InboxEvent).where(InboxEvent.event_id == event_id)).one()


def _task(svc: Service) -> InboxEvent:
    with Session(svc.engine) as session:
        return session.exec(select(InboxEvent).where(InboxEvent.style == "task")).one()


def _audit(svc: Service) -> list[tuple[str, str | None, str | None]]:
    rows = svc.rows(CorrectionAudit)
    return sorted((a.identifier, a.new_identifier, a.after) for a in rows)


def test_an_object_unreadable_now_does_not_keep_the_other_objects_rows_from_being_billed(
    service: Service,
) -> None:
    """README, "Bounded input": "no file can hang, crash or exhaust the remediation", and a
    report "left short is marked `partial`, with an alert". A report samples rows of two
    objects; the customer's exporter has since written a.csv again, empty (the poller
    recorded that version as unreadable). The whole task ended "not remediated: empty file"
    with a critical alert, and b1 of the intact b.csv was never corrected (never billed); the
    report stayed `recorded`."""
    now = int(time.time()) - 60
    bucket = _bucket(service)
    (bucket / "a.csv").write_text(HEADER + f"a1,{now},api_requests,acme-42,5\n")
    (bucket / "b.csv").write_text(HEADER + f"b1,{now},api_requests,acme-42,7\n")
    _imported(service, "a.csv", ["a1"])
    _imported(service, "b.csv", ["b1"])
    (bucket / "a.csv").write_text("")
    _imported(service, "a.csv", [], status="unreadable")

    event_id = service.deliver(_report(service, ["a1", "b1"]))
    service.drain()

    assert _audit(service) == [("b1", "b1-mfx1", "cus_acme")]
    [corrected] = (bucket / "corrected").rglob("b.corrected.r1.csv")
    assert corrected.read_text().splitlines()[1] == f"b1-mfx1,{now},api_requests,cus_acme,7"
    [report] = service.rows(ErrorReport)
    assert report.status == "partial"
    alerts = service.rows(Alert)
    assert not [a for a in alerts if a.kind == "remediation_input"]  # no "cannot remediate"
    [alert] = [a for a in alerts if a.kind == "error_report.partial"]
    assert alert.severity == "warning"
    assert alert.subject == f"report {event_id}: found 1 of 2 reported rows"
    assert "unreadable since Stripe took them: a.csv (empty file" in alert.message
    assert _task(service).status == "done"


def test_an_import_set_counting_failed_records_without_their_file_is_not_quietly_dropped(
    service: Service,
) -> None:
    """README, "Nothing lost": "An event whose data cannot be used is dead-lettered at once
    with the reason (replayable)". Stripe said 3 records of the import set failed but the
    event names no failed-records file (`result.errors` without `file`/`file_id`): the import
    set was recorded as `none` to remediate, nothing was queued and nobody was told; the
    three rows were never billed."""
    body = {
        "id": "impset_nofile",
        "object": "data_management.import_set",
        "status": "succeeded_with_errors",
        "source_object": "day.csv",
        "result": {"errors": {"row_count": 3}, "successes": {"row_count": 97}},
    }
    event_id = service.deliver(build_import_set_event("succeeded", body))
    service.drain()

    row = _row(service, event_id)
    assert (row.status, row.attempts) == ("dead", 1)
    assert row.last_error == (
        "unusable event: import set event: impset_nofile is succeeded_with_errors with 3 "
        "failed record(s) but names no failed-records file (data.object.result.errors.file)"
    )
    [alert] = service.rows(Alert)
    assert (alert.kind, alert.severity) == ("inbox.dead_letter", "critical")
    assert "3 failed record(s)" in alert.message
    # not recorded as an import set with nothing to remediate (its rows counted as taken)
    assert service.rows(ImportSet) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("validation_end", "9999-12-31T23:59:59Z"), ("validation_start", "0001-01-01T00:00:00Z")],
)
def test_a_report_window_at_the_calendars_edge_is_concluded(
    service: Service, field: str, value: str
) -> None:
    """docs/architecture.md, "Reliability contract": "No input produces a traceback". Stripe's
    API hands over a window ending in 9999 (or starting in year 1): the search for objects
    around it overflowed the calendar and the task failed with `OverflowError: date value
    out of range` on every attempt until dead; the report never concluded and the partial
    alert was never raised."""
    now = int(time.time()) - 60
    (_bucket(service) / "p.csv").write_text(HEADER + f"p1,{now},api_requests,acme-42,5\n")
    _imported(service, "p.csv", ["p1"])
    event = _report(service, ["p1"])
    data = event["data"]
    assert isinstance(data, dict)
    data[field] = value
    data["reason"]["error_count"] = 3
    data["reason"]["error_types"][0]["error_count"] = 3
    event_id = service.deliver(event)
    service.drain()

    task = _task(service)
    assert (task.status, task.attempts, task.last_error) == ("done", 1, None)
    assert task.outcome is not None and task.outcome.startswith("partial:")
    [report] = service.rows(ErrorReport)
    assert report.status == "partial"
    [partial] = [a for a in service.rows(Alert) if a.kind == "error_report.partial"]
    assert partial.subject == f"report {event_id}: found 1 of 3 reported rows"


def test_a_file_id_the_files_api_refuses_is_dead_lettered_at_once(service: Service) -> None:
    """README, "Only well-formed events are stored": an import set "with file ids that are
    not Stripe ids is stored and dead-lettered with the reason". `file_ab-c` passed the
    handler, then the Files adapter refused it as "not a Stripe file id" and the task was
    retried as a transient failure, with backoff, until dead."""
    body = {
        "id": "impset_badfile",
        "object": "data_management.import_set",
        "status": "succeeded_with_errors",
        "result": {"errors": {"file": "file_ab-c", "row_count": 3}},
    }
    event_id = service.deliver(build_import_set_event("succeeded", body))
    service.drain()

    row = _row(service, event_id)
    assert (row.status, row.attempts) == ("dead", 1)
    assert row.last_error == (
        "unusable event: import set event: data.object.result.errors.file 'file_ab-c' "
        "is not a Stripe file id"
    )
    assert [e.style for e in service.rows(InboxEvent)] == ["snapshot"]


def test_two_error_types_of_one_code_count_together(service: Service) -> None:
    """README: "a report left short is marked `partial`, with an alert". A report whose
    `error_types` name one code twice (two entries without a code are both `unknown`) was
    counted by its last entry only (`{code: count}` kept one per code): Stripe counted 2
    errors, meterfix expected 1, found 1, and marked the report `remediated`: the row it
    never found was never billed, and no alert said so."""
    now = int(time.time()) - 60
    bucket = _bucket(service)
    (bucket / "a.csv").write_text(HEADER + f"a1,{now},api_requests,acme-42,5\n")
    _imported(service, "a.csv", ["a1"])
    event = _report(service, ["a1"])
    reason = event["data"]["reason"]  # type: ignore[index]
    reason["error_types"].append({"code": NOT_FOUND, "error_count": 1, "sample_errors": []})
    reason["error_count"] = 2
    event_id = service.deliver(event)
    service.drain()
    assert _audit(service) == [("a1", "a1-mfx1", "cus_acme")]
    [report] = service.rows(ErrorReport)
    assert report.status == "partial"
    [alert] = [a for a in service.rows(Alert) if a.kind == "error_report.partial"]
    assert alert.subject == f"report {event_id}: found 1 of 2 reported rows"
