"""Stripe's asynchronous meter-event validation, as far as the docs describe it (facts §5, §6).

Checked in this order: meter exists, meter active, timestamp parses and lies within
[now - 35 days, now + 5 min], customer key present, customer known (see
`SandboxOptions.strict_customers`), value key present, value numeric.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum

from sandbox.clock import parse_rfc3339
from sandbox.objects import JSON
from sandbox.state import SandboxState

MAX_PAST_SECONDS = 35 * 24 * 3600
MAX_FUTURE_SECONDS = 5 * 60
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


class ErrorCode(StrEnum):
    NO_METER = "no_meter"
    ARCHIVED_METER = "archived_meter"
    NO_CUSTOMER_DEFINED = "meter_event_no_customer_defined"
    CUSTOMER_NOT_FOUND = "meter_event_customer_not_found"
    VALUE_NOT_FOUND = "meter_event_value_not_found"
    INVALID_VALUE = "meter_event_invalid_value"
    TOO_FAR_IN_PAST = "timestamp_too_far_in_past"
    IN_FUTURE = "timestamp_in_future"
    # Sandbox assumption: Stripe documents no code for unparseable timestamps.
    INVALID_TIMESTAMP = "invalid_timestamp"


@dataclass(frozen=True)
class MeterEventInput:
    """One submitted meter event; `timestamp` as received (unix number, numeric or ISO text)."""

    event_name: str
    payload: dict[str, str]
    identifier: str
    timestamp: object = None


@dataclass(frozen=True)
class Rejection:
    code: ErrorCode
    message: str
    meter_id: str | None


def coerce_timestamp(value: object, default: float) -> int:
    """Unix seconds from an int, numeric text or RFC 3339 text; None/"" -> `default`."""
    if value is None or value == "":
        return int(default)
    if isinstance(value, bool):
        raise ValueError("not a timestamp")
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    if _NUMBER.fullmatch(text):
        return int(float(text))
    return int(parse_rfc3339(text))


def validate(state: SandboxState, event: MeterEventInput, now: float) -> Rejection | None:
    meter = state.meter_for_event_name(event.event_name)
    if meter is None:
        message = f"No meter was found matching event_name {event.event_name}."
        return Rejection(ErrorCode.NO_METER, message, None)
    meter_id = str(meter["id"])
    for check in (_check_status, _check_timestamp, _check_customer, _check_value):
        failure = check(state, meter, event, now)
        if failure is not None:
            return Rejection(failure[0], failure[1], meter_id)
    return None


_Failure = tuple[ErrorCode, str] | None


def _check_status(state: SandboxState, meter: JSON, event: MeterEventInput, now: float) -> _Failure:
    if meter["status"] != "active":
        return ErrorCode.ARCHIVED_METER, f"Meter {meter['id']} is not active."
    return None


def _check_timestamp(
    state: SandboxState, meter: JSON, event: MeterEventInput, now: float
) -> _Failure:
    try:
        timestamp = coerce_timestamp(event.timestamp, now)
    except (ValueError, OverflowError):
        return ErrorCode.INVALID_TIMESTAMP, f"Timestamp {event.timestamp!r} is not valid."
    if timestamp < now - MAX_PAST_SECONDS:
        return ErrorCode.TOO_FAR_IN_PAST, "Timestamp must be within the past 35 calendar days."
    if timestamp > now + MAX_FUTURE_SECONDS:
        return ErrorCode.IN_FUTURE, "Timestamp must not be more than 5 minutes in the future."
    return None


def _check_customer(
    state: SandboxState, meter: JSON, event: MeterEventInput, now: float
) -> _Failure:
    key = meter["customer_mapping"]["event_payload_key"]
    customer = event.payload.get(key, "")
    if customer == "":
        return ErrorCode.NO_CUSTOMER_DEFINED, f"Customer mapping key {key} not found in payload."
    with state.lock:
        checking = state.options.strict_customers or bool(state.customers)
        known = customer in state.customers
    if checking and not known:
        return ErrorCode.CUSTOMER_NOT_FOUND, f"No customer was found with id {customer}."
    return None


def _check_value(state: SandboxState, meter: JSON, event: MeterEventInput, now: float) -> _Failure:
    key = meter["value_settings"]["event_payload_key"]
    value = event.payload.get(key, "")
    if value == "":
        return ErrorCode.VALUE_NOT_FOUND, f"Value key {key} not found in payload."
    if not _NUMBER.fullmatch(value) or not math.isfinite(float(value)):
        return ErrorCode.INVALID_VALUE, f"Value {value!r} for key {key} is not a valid number."
    return None
