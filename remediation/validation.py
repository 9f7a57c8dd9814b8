"""Our own check of a usage record against the meters, mirroring Stripe's documented limits.

Limits (stripe-facts §5): a timestamp within the past 35 days and at most 5 minutes ahead;
the meter must exist and be active; the payload needs the meter's customer and value keys;
the value must be a number. The digit limit behind `meter_event_value_too_many_digits` is not
documented: it is checked only when a precision (decimal places) is configured.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from remediation.codes import ErrorCode
from remediation.meters import Meter
from remediation.records import UsageRecord

MAX_FUTURE_SECONDS = 5 * 60
MAX_PAST_SECONDS = 35 * 86_400
PLAIN_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class Problem(NamedTuple):
    code: str
    message: str


class MeterIndex:
    """Meters by event name (Stripe allows one meter per event name)."""

    def __init__(self, meters: Sequence[Meter], *, value_precision: int | None = None) -> None:
        self.meters = tuple(meters)
        self.by_event = {meter.event_name: meter for meter in self.meters}
        self.value_precision = value_precision

    def get(self, event_name: str | None) -> Meter | None:
        return self.by_event.get(event_name) if event_name is not None else None

    def active(self) -> list[Meter]:
        return [meter for meter in self.meters if meter.active]


def parse_timestamp(raw: object) -> int | None:
    """Unix seconds from an int, an integral float or a string of digits; else None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() else None
    if isinstance(raw, str):
        text = raw.strip()
        # isascii: `²` and other Unicode digits pass isdigit() but int() rejects them
        if text.isascii() and (text.isdigit() or (text[:1] == "-" and text[1:].isdigit())):
            return int(text)
    return None


def plain_number(raw: object) -> str | None:
    """The value as Stripe accepts it in a payload (`25`, `-3`, `1.5`), or None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            return None
        return str(int(raw)) if raw.is_integer() else repr(raw)
    if isinstance(raw, str) and ((raw.isdigit() and raw.isascii()) or PLAIN_NUMBER.fullmatch(raw)):
        return raw
    return None


def decimal_places(number: str) -> int:
    dot = number.find(".")
    return 0 if dot < 0 else len(number) - dot - 1


def check_timestamp(raw: object, now: int) -> Problem | None:
    if raw is None:
        return None  # Stripe defaults a missing timestamp to the time it receives the event
    ts = parse_timestamp(raw)
    if ts is None:
        return Problem(ErrorCode.TIMESTAMP_INVALID, f"timestamp {raw!r} is not unix seconds")
    if ts > now + MAX_FUTURE_SECONDS:
        return Problem(ErrorCode.TIMESTAMP_IN_FUTURE, f"timestamp {ts} is {ts - now} s ahead")
    if ts < now - MAX_PAST_SECONDS:
        return Problem(ErrorCode.TIMESTAMP_TOO_FAR_IN_PAST, f"timestamp {ts} is over 35 days old")
    return None


def check_meter(record: UsageRecord, index: MeterIndex) -> tuple[Meter | None, Problem | None]:
    meter = index.get(record.event_name)
    if meter is None:
        message = f"No meter was found matching event_name {record.event_name}."
        return None, Problem(ErrorCode.NO_METER, message)
    if not meter.active:
        return meter, Problem(ErrorCode.ARCHIVED_METER, f"meter {meter.id} is {meter.status}")
    return meter, None


def check_payload(record: UsageRecord, meter: Meter, index: MeterIndex) -> Problem | None:
    payload = record.payload
    customer = payload.get(meter.customer_key)
    if customer is None or (isinstance(customer, str) and not customer.strip()):
        message = f"Customer mapping key {meter.customer_key} not found in payload."
        return Problem(ErrorCode.NO_CUSTOMER_DEFINED, message)
    if meter.value_key not in payload:
        return Problem(ErrorCode.VALUE_NOT_FOUND, f"value key {meter.value_key} not in payload")
    number = plain_number(payload[meter.value_key])
    if number is None:
        raw = payload[meter.value_key]
        return Problem(ErrorCode.INVALID_VALUE, f"value {raw!r} is not a valid number")
    precision = index.value_precision
    if precision is not None and decimal_places(number) > precision:
        message = f"value {number} has more than {precision} decimal places"
        return Problem(ErrorCode.VALUE_TOO_MANY_DIGITS, message)
    return check_dimensions(payload, meter)


def check_dimensions(payload: dict[str, object], meter: Meter) -> Problem | None:
    if not meter.dimension_keys:
        return None
    missing = [key for key in meter.dimension_keys if key not in payload]
    if missing:
        message = f"dimension keys missing: {', '.join(missing)}"
        return Problem(ErrorCode.MISSING_DIMENSION_KEYS, message)
    used = {meter.customer_key, meter.value_key, *meter.dimension_keys}
    unused = [key for key in payload if key not in used]
    if unused:
        message = f"payload keys the meter does not use: {', '.join(unused)}"
        return Problem(ErrorCode.DIMENSION_COUNT_TOO_HIGH, message)
    return None


def validate_record(record: UsageRecord, index: MeterIndex, now: int) -> Problem | None:
    """The first problem Stripe would report for this record, or None when it is valid."""
    if record.malformed:
        return Problem(ErrorCode.MALFORMED_ROW, record.malformed)
    meter, problem = check_meter(record, index)
    if problem is not None or meter is None:
        return problem
    return check_payload(record, meter, index) or check_timestamp(record.timestamp, now)


def rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_meter_event(record: UsageRecord, meter: Meter) -> dict[str, object]:
    """A v2 meter event stream item: {event_name, identifier, payload{str: str}, timestamp}."""
    payload = {key: _payload_text(value) for key, value in record.payload.items()}
    if meter.value_key in record.payload:
        number = plain_number(record.payload[meter.value_key])
        if number is not None:
            payload[meter.value_key] = number
    event: dict[str, object] = {"event_name": meter.event_name}
    if record.identifier:
        event["identifier"] = record.identifier
    event["payload"] = payload
    ts = parse_timestamp(record.timestamp)
    if ts is not None:
        event["timestamp"] = rfc3339(ts)
    return event


def _payload_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    number = plain_number(value)
    return number if number is not None else str(value)
