"""The meter's `error_report.unmatched` warning counts its reports; its subject, message and
detail said only the last one's ("Stripe refused 1 meter event" on an alert counting three
reports of one error each). They sum the reports it counts: errors, codes, events."""

from __future__ import annotations

from sandbox.events import build_error_report_event
from service.models import Alert, ErrorReport
from tests.integration.test_remediation_tasks import Service, service  # noqa: F401

NO_CUSTOMER = ("meter_event_no_customer_defined", "No customer defined", "zz-1")
NOT_FOUND = ("meter_event_customer_not_found", "No customer cus_x", "zz-2")
TAIL = "that meterfix cannot trace to a bucket row"


def _alert(svc: Service) -> Alert:
    [alert] = [a for a in svc.rows(Alert) if isinstance(a, Alert)]
    return alert


def test_the_unmatched_warning_sums_the_reports_it_counts(service: Service) -> None:  # noqa: F811
    first = service.deliver(build_error_report_event("mtr_other", [NO_CUSTOMER]))
    service.drain()
    alert = _alert(service)
    assert alert.subject == f"Stripe refused 1 meter event (mtr_other) {TAIL}"
    assert alert.message.startswith(
        f"Error report {first}: meter_event_no_customer_defined x1. None of its sampled rows"
    )
    assert (alert.count, alert.rows) == (1, 1)
    second = service.deliver(build_error_report_event("mtr_other", [NO_CUSTOMER]))
    third = service.deliver(build_error_report_event("mtr_other", [NO_CUSTOMER, NOT_FOUND]))
    service.deliver(build_error_report_event("mtr_elsewhere", [NOT_FOUND]))  # its own warning
    service.drain()
    reports = {
        r.event_id: r.status for r in service.rows(ErrorReport) if isinstance(r, ErrorReport)
    }
    assert set(reports.values()) == {"unmatched"} and len(reports) == 4
    [alert] = [a for a in service.rows(Alert) if isinstance(a, Alert) and a.meter == "mtr_other"]
    assert alert.count == 3
    assert alert.subject == f"Stripe refused 4 meter events (mtr_other) in 3 error reports {TAIL}"
    assert alert.message.startswith(
        f"Error reports {first}, {second}, {third}: meter_event_customer_not_found x1, "
        "meter_event_no_customer_defined x3. None of their sampled rows"
    )
    assert alert.rows == 4
    assert alert.detail == {
        "event_id": third,
        "event_ids": [first, second, third],
        "reports": 3,
        "meter_id": "mtr_other",
        "counts": {"meter_event_no_customer_defined": 3, "meter_event_customer_not_found": 1},
    }
    assert alert.links == {"event": third}
