"""Which rows of a file a meter error report is about.

Stripe's report names a meter, the codes it saw and a few sample identifiers, never every
failed row. When the rows are ours, every row of that meter that fails our own validation
with a reported code is selected, not only the samples; rows Stripe sampled are selected
with the code Stripe gave. `meter_event_customer_not_found` cannot be checked offline, so
rows sharing a customer id with a sampled row of that code are selected with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from remediation.codes import ErrorCode
from remediation.records import UsageRecord
from remediation.validation import MeterIndex, validate_record

IdentifierFill = Callable[[UsageRecord], None]


@dataclass(frozen=True)
class ReportScope:
    codes: frozenset[str]  # every code the report counted
    samples: Mapping[str, str]  # sample identifier -> code
    event_name: str | None  # the reported meter's event name (None: no_meter_found)
    skip_rows: frozenset[int] = field(default_factory=frozenset)  # handled by an earlier run


def bad_customers(
    records: Iterable[UsageRecord], scope: ReportScope, index: MeterIndex
) -> set[str]:
    """Customer ids of sampled rows reported as `meter_event_customer_not_found`."""
    found: set[str] = set()
    for record in records:
        if scope.samples.get(record.identifier or "") != ErrorCode.CUSTOMER_NOT_FOUND:
            continue
        meter = index.get(record.event_name)
        value = record.payload.get(meter.customer_key) if meter else None
        if value not in (None, ""):
            found.add(str(value))
    return found


def select_reported(
    records: Iterable[UsageRecord],
    scope: ReportScope,
    index: MeterIndex,
    now: int,
    customers: set[str],
) -> Iterator[UsageRecord]:
    """The rows the report is about, each with `error_code` set."""
    for record in records:
        if record.row_number in scope.skip_rows:
            continue
        code = _reported_code(record, scope, index, now, customers)
        if code is not None:
            record.error_code, record.error_message = code, None
            yield record


def _reported_code(
    record: UsageRecord, scope: ReportScope, index: MeterIndex, now: int, customers: set[str]
) -> str | None:
    sampled = scope.samples.get(record.identifier or "")
    if sampled is not None:
        return sampled
    if scope.event_name is not None and record.event_name != scope.event_name:
        return None
    problem = validate_record(record, index, now)
    if problem is not None:
        return problem.code if problem.code in scope.codes else None
    if customers and ErrorCode.CUSTOMER_NOT_FOUND in scope.codes:
        meter = index.get(record.event_name)
        value = record.payload.get(meter.customer_key) if meter else None
        if value is not None and str(value) in customers:
            return ErrorCode.CUSTOMER_NOT_FOUND.value
    return None
