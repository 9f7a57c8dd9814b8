"""Shared reading of the two meter error events (`error_report_triggered`, `no_meter_found`).

Both carry the same `data` once fetched: a summary, a validation window and, per error
code, a count and sample errors. The meter id is only in `related_object` (absent or `{}`
for no_meter_found).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers._fields import ID_CHARS, MAX_COUNT, count, first_text, kind, mapping, rfc3339, text
from handlers.context import HandlerContext
from handlers.errors import UnusableEvent
from handlers.records import (
    ErrorReportRecord,
    ErrorSampleRecord,
    ErrorTypeRecord,
    Outcome,
    RemediationKind,
)
from remediation.codes import normalize_code


class IncompleteEvent(UnusableEvent):
    """The event lacks what the handler needs (e.g. a thin payload was not fetched)."""


def handle_report(event: Mapping[str, Any], ctx: HandlerContext) -> Outcome:
    report = parse_report(event)
    status = ctx.record_error_report(report)
    queued = ctx.request_remediation(RemediationKind.ERROR_REPORT, report.event_id)
    codes = ",".join(t.code for t in report.error_types) or "none"
    errors = "error" if report.error_count == 1 else "errors"
    summary = f"{report.error_count} {errors} ({codes}) meter={report.meter_id}"
    return Outcome(status, summary + (", remediation queued" if queued else ""))


def parse_report(event: Mapping[str, Any]) -> ErrorReportRecord:
    event_id = text(event.get("id"))
    if event_id is None or "data" not in event:
        raise IncompleteEvent("meter error event without id or data (fetch the full event)")
    data = event.get("data")
    if not isinstance(data, Mapping):
        raise UnusableEvent(f"meter error event: data is {kind(data)}, not an object")
    reason = mapping(data.get("reason"))
    error_types = [mapping(item) for item in _items(reason.get("error_types"))]
    samples = [sample for item in error_types for sample in _samples(item)]
    total = _total(reason, error_types, samples)
    # Stripe samples a few rows a code; an event of 300,000 samples stored a row each (1.5 GB
    # of worker memory, SQLite held past the heartbeat): the first MAX_SAMPLES are kept, the
    # count stays the report's (rows past the samples are found as any are, by the run)
    samples = samples[:MAX_SAMPLES]
    return ErrorReportRecord(
        event_id=event_id,
        event_type=str(event.get("type", "")),
        meter_id=_meter_id(mapping(event.get("related_object"))),
        livemode=bool(event.get("livemode", False)),
        validation_start=rfc3339(data.get("validation_start")),
        validation_end=rfc3339(data.get("validation_end")),
        summary=text(data.get("developer_message_summary")),
        error_count=total,
        error_types=[_type_count(item) for item in error_types],
        samples=samples,
        detail={"created": event.get("created"), "context": event.get("context")},
    )


MAX_SAMPLES = 1000  # sample errors kept of one report (Stripe's carry a few a code)


def _items(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def _meter_id(related: Mapping[str, Any]) -> str | None:
    kind = related.get("type")
    if kind not in (None, "billing.meter"):
        return None
    return text(related.get("id"), ID_CHARS)


def _total(
    reason: Mapping[str, Any],
    error_types: list[Mapping[str, Any]],
    samples: list[ErrorSampleRecord],
) -> int:
    """The errors the report counts: the most of its total, its per-code counts summed and
    its samples (a total beside per-code counts was ignored, so a report Stripe counted 5
    errors in, one of them found, was `remediated`, not `partial`; a total of -1 or 1.5 was
    0 errors beside a sample)."""
    by_code = sum(count(item.get("error_count")) or 0 for item in error_types)
    total = count(reason.get("error_count")) or 0
    return min(max(total, by_code, len(samples)), MAX_COUNT)


def _code(item: Mapping[str, Any]) -> str:
    # Unknown codes are kept as sent (open enum), trimmed and in lower case as a failed-records
    # file's codes are (`METER_EVENT_CUSTOMER_NOT_FOUND` was unknown: its rows unclassified,
    # those past the samples never found); a missing one is named so it stays visible.
    # normalised before it is cut: a lower case can be longer (`İ` is two characters)
    code = normalize_code(text(item.get("code")))
    return text(code, ID_CHARS) or "unknown"


def _type_count(item: Mapping[str, Any]) -> ErrorTypeRecord:
    return ErrorTypeRecord(code=_code(item), error_count=count(item.get("error_count")) or 0)


def _samples(item: Mapping[str, Any]) -> list[ErrorSampleRecord]:
    code = _code(item)
    samples = []
    for raw in _items(item.get("sample_errors")):
        sample = mapping(raw)
        request = mapping(sample.get("request"))
        # The API reference says `identifier`; the usage guides show `idempotency_key`.
        identifier = first_text(request, "identifier", "idempotency_key", most=ID_CHARS)
        samples.append(ErrorSampleRecord(code, text(sample.get("error_message")), identifier))
    return samples
