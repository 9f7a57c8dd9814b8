"""A meter error report whose counts or validation window Stripe's API hands over in a shape
the handler cannot use (a Unicode digit, a date at the calendar's edge): the event must be
handled or dead-lettered at once with the reason (DESIGN: "never retried as if transient"),
not fail with a traceback on every attempt."""

# ruff: noqa: F811  (fixtures imported from the modules that define them)
from __future__ import annotations

import pytest
from sqlmodel import Session, select

from sandbox.events import build_error_report_event
from service.models import InboxEvent
from tests.integration.test_remediation_tasks import Service, service  # noqa: F401


def _mutate(event: dict, how: str) -> None:
    data = event["data"]
    if how == "count-superscript":
        data["reason"]["error_count"] = "\u00b2"
    elif how == "count-5000-digits":
        data["reason"]["error_count"] = "9" * 5000
    elif how == "start-with-zone":
        data["validation_start"] = "0001-01-01T00:00:00+01:00"
    elif how == "end-with-zone":
        data["validation_end"] = "9999-12-31T23:59:59-01:00"


@pytest.mark.parametrize(
    "how", ["count-superscript", "count-5000-digits", "start-with-zone", "end-with-zone"]
)
def test_a_report_with_an_odd_field_is_not_retried_as_transient(service: Service, how: str) -> None:
    errors = [("meter_event_customer_not_found", "No customer cus_x", "zz-1")]
    event = build_error_report_event("mtr_other", errors)
    _mutate(event, how)
    event_id = service.deliver(event)
    service.drain()
    with Session(service.engine) as session:
        row = session.exec(select(InboxEvent).where(InboxEvent.event_id == event_id)).one()
    assert row.status in ("done", "dead"), (row.status, row.attempts, row.last_error)


def test_an_import_set_with_a_unicode_digit_count_is_not_retried_as_transient(
    service: Service,
) -> None:
    from sandbox.events import build_import_set_event

    body = {
        "id": "impset_odd",
        "object": "data_management.import_set",
        "status": "succeeded_with_errors",
        "result": {"errors": {"file": None, "row_count": "\u00b2"}},
    }
    event_id = service.deliver(build_import_set_event("data_management.import_set.succeeded", body))
    service.drain()
    with Session(service.engine) as session:
        row = session.exec(select(InboxEvent).where(InboxEvent.event_id == event_id)).one()
    assert row.status in ("done", "dead"), (row.status, row.attempts, row.last_error)


@pytest.mark.parametrize("created", [10**15, -(10**12)])
def test_an_import_set_event_created_far_out_does_not_kill_its_task(
    service: Service, created: int
) -> None:
    """A well-signed snapshot event whose `created` is far from now: the import set is
    recorded, then its remediation task crashes on every attempt (datetime out of range)."""
    from tests.integration.test_remediation_tasks import _import_set_with_errors

    event = _import_set_with_errors(service, "impset_created")
    event["created"] = created
    service.deliver(event)
    service.drain()
    with Session(service.engine) as session:
        task = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).one()
    assert task.status in ("done", "dead"), (task.status, task.attempts, task.last_error)
