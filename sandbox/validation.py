"""Meter event validation as Stripe publishes it (limits and error shapes).

Two stages, as at Stripe:
- synchronous parameter checks (`stream_event`, `v1_timestamp`, `check_lengths`): a request
  whose fields have the wrong type or length answers 400 at once and nothing is kept;
- asynchronous validation (`validate`), reported later in error-report events, checked in this
  order: meter exists, meter active, timestamp within [now - 35 days, now + 5 min], customer
  key present, customer known (see `SandboxOptions.strict_customers`), value key present,
  value numeric. Only codes Stripe documents are used.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sandbox.errors import StripeApiError
from sandbox.objects import JSON, is_deleted
from sandbox.state import SandboxState

MAX_PAST_SECONDS = 35 * 24 * 3600
MAX_FUTURE_SECONDS = 5 * 60
MAX_EVENT_NAME_CHARS = 100
MAX_IDENTIFIER_CHARS = 100
# Digits are ASCII `[0-9]` throughout, never `\d` (which takes any Unicode digit, U+0663 or U+FF11,
# as int() and float() do): Stripe's numbers and timestamps are ASCII.
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
# v1 `timestamp` and S3 files: an integer (of seconds; ms or ns values fail the time window)
UNIX_SECONDS = re.compile(r"-?[0-9]{1,19}")
# RFC 3339 date-time (section 5.6): full date, `T`, full time, fraction optional, zone required.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
STREAM_EVENT_FIELDS = frozenset({"event_name", "identifier", "payload", "timestamp"})
# Stripe's v2 APIs answer invalid fields with this code (the stripe-node SDK maps it).
V2_INVALID_FIELDS = "invalid_fields"


class ErrorCode(StrEnum):
    NO_METER = "no_meter"
    ARCHIVED_METER = "archived_meter"
    NO_CUSTOMER_DEFINED = "meter_event_no_customer_defined"
    CUSTOMER_NOT_FOUND = "meter_event_customer_not_found"
    VALUE_NOT_FOUND = "meter_event_value_not_found"
    INVALID_VALUE = "meter_event_invalid_value"
    TOO_FAR_IN_PAST = "timestamp_too_far_in_past"
    IN_FUTURE = "timestamp_in_future"


@dataclass(frozen=True)
class MeterEventInput:
    """One meter event that passed the parameter checks; `timestamp` in unix seconds (None:
    the time it was received)."""

    event_name: str
    payload: dict[str, str]
    identifier: str
    timestamp: int | None = None


@dataclass(frozen=True)
class Rejection:
    code: ErrorCode
    message: str
    meter_id: str | None


def parse_rfc3339(text: str) -> int:
    """RFC 3339 date-time -> unix seconds (fraction dropped); ValueError on anything else,
    including unix numbers, dates without a time and times without a zone."""
    if not _RFC3339.fullmatch(text):
        raise ValueError(f"not an RFC 3339 date-time: {text[:40]!r}")
    moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    return int(moment.timestamp())


def parse_unix_seconds(text: str) -> int:
    """Integer unix seconds as text (v1 form field, S3 file column); ValueError otherwise."""
    if not UNIX_SECONDS.fullmatch(text.strip()):
        raise ValueError(f"not integer unix seconds: {text[:40]!r}")
    return int(text.strip())


def too_long(name: str, value: str, limit: int) -> str | None:
    """The Stripe-style message for a string parameter over its limit, or None."""
    if len(value) <= limit:
        return None
    return f"Invalid string: {value[:20]}...; {name} must be at most {limit} characters"


def check_lengths(event_name: str, identifier: str, param_prefix: str = "") -> None:
    """Stripe's published limits: `event_name` and `identifier` at most 100 characters."""
    for name, value, limit in (
        ("event_name", event_name, MAX_EVENT_NAME_CHARS),
        ("identifier", identifier, MAX_IDENTIFIER_CHARS),
    ):
        message = too_long(param_prefix + name, value, limit)
        if message is not None:
            code = V2_INVALID_FIELDS if param_prefix else None
            raise StripeApiError(400, message, code, param_prefix + name)


def stream_event(index: int, item: Any) -> MeterEventInput:
    """One item of a v2 meter event stream request, checked as Stripe checks its parameters:
    `event_name` a string, `identifier` an optional string, `payload` string -> string,
    `timestamp` an optional RFC 3339 string. Raises StripeApiError(400) otherwise."""
    prefix = f"events[{index}]."
    if not isinstance(item, dict):
        raise _v2_invalid(f"events[{index}]", "must be an object")
    unknown = sorted(set(item) - STREAM_EVENT_FIELDS)
    if unknown:
        raise _v2_invalid(prefix + unknown[0], "is not a known parameter")
    event_name = item.get("event_name")
    if not isinstance(event_name, str) or not event_name:
        raise _v2_invalid(prefix + "event_name", "is required and must be a string")
    identifier = item.get("identifier")
    if identifier is not None and (not isinstance(identifier, str) or not identifier):
        raise _v2_invalid(prefix + "identifier", "must be a non-empty string")
    check_lengths(event_name, identifier or "", prefix)
    return MeterEventInput(
        event_name=event_name,
        payload=_stream_payload(prefix, item.get("payload")),
        identifier=identifier or str(uuid.uuid4()),
        timestamp=_stream_timestamp(prefix, item.get("timestamp")),
    )


def _stream_payload(prefix: str, payload: Any) -> dict[str, str]:
    if not isinstance(payload, dict) or not payload:
        raise _v2_invalid(prefix + "payload", "is required and must be an object")
    for key, value in payload.items():
        if not isinstance(value, str):
            kind = type(value).__name__
            raise _v2_invalid(f"{prefix}payload.{key}", f"must be a string, not {kind}")
    return dict(payload)


def _stream_timestamp(prefix: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        kind = type(value).__name__
        raise _v2_invalid(prefix + "timestamp", f"must be an RFC 3339 string, not {kind}")
    try:
        return parse_rfc3339(value)
    except (ValueError, OverflowError) as exc:
        raise _v2_invalid(prefix + "timestamp", "must be an RFC 3339 date-time") from exc


def _v2_invalid(param: str, problem: str) -> StripeApiError:
    return StripeApiError(400, f"Invalid field {param}: {problem}.", V2_INVALID_FIELDS, param)


def v1_timestamp(value: str | None) -> int | None:
    """The v1 form's `timestamp` (an integer param): 400 `parameter_invalid_integer` otherwise."""
    if value is None or value == "":
        return None
    try:
        return parse_unix_seconds(value)
    except ValueError as exc:
        message = f"Invalid integer: {value[:40]}"
        raise StripeApiError(400, message, "parameter_invalid_integer", "timestamp") from exc


def is_number(value: str) -> bool:
    return bool(NUMBER.fullmatch(value)) and math.isfinite(float(value))


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
    if event.timestamp is None:
        return None
    if event.timestamp < now - MAX_PAST_SECONDS:
        return ErrorCode.TOO_FAR_IN_PAST, "Timestamp must be within the past 35 calendar days."
    if event.timestamp > now + MAX_FUTURE_SECONDS:
        return ErrorCode.IN_FUTURE, "Timestamp must not be more than 5 minutes in the future."
    return None


def _check_customer(
    state: SandboxState, meter: JSON, event: MeterEventInput, now: float
) -> _Failure:
    key = meter["customer_mapping"]["event_payload_key"]
    customer = event.payload.get(key, "")
    if customer == "":
        return ErrorCode.NO_CUSTOMER_DEFINED, f"Customer mapping key {key} not found in payload."
    with state.lock:  # a deleted customer's stub still counts as one registered
        checking = state.options.strict_customers or bool(state.customers)
        stored = state.customers.get(customer)
    known = stored is not None and not is_deleted(stored)
    if checking and not known:
        return ErrorCode.CUSTOMER_NOT_FOUND, f"No customer was found with id {customer}."
    return None


def _check_value(state: SandboxState, meter: JSON, event: MeterEventInput, now: float) -> _Failure:
    key = meter["value_settings"]["event_payload_key"]
    value = event.payload.get(key, "")
    if value == "":
        return ErrorCode.VALUE_NOT_FOUND, f"Value key {key} not found in payload."
    if not is_number(value):
        return ErrorCode.INVALID_VALUE, f"Value {value!r} for key {key} is not a valid number."
    return None
