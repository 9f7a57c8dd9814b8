"""Every event type the README documents has a handler, and nothing else is registered."""

from __future__ import annotations

from handlers import REGISTRY, EventType, handler_for
from handlers.import_sets import handle_import_set
from handlers.meter_error_reports import handle_report

DOCUMENTED = {
    "v1.billing.meter.error_report_triggered": handle_report,
    "v1.billing.meter.no_meter_found": handle_report,
    "data_management.import_set.failed": handle_import_set,
    "data_management.import_set.succeeded": handle_import_set,
}


def test_every_documented_type_is_registered_with_its_handler() -> None:
    assert REGISTRY == DOCUMENTED
    assert {str(t) for t in EventType} == set(DOCUMENTED)


def test_unknown_types_have_no_handler() -> None:
    assert handler_for("charge.refunded") is None
    assert handler_for("v1.billing.meter.unknown_thing") is None
