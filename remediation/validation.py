"""Our own check of a usage record against the meters, mirroring Stripe's documented limits.

Limits (as Stripe publishes them): a timestamp within the past 35 days and at most 5 minutes ahead;
the meter must exist and be active; the payload needs the meter's customer and value keys;
the value must be a number. Before any of that, every field is held to the field limits
(`limits.FieldLimits`): lengths and control characters are checked before anything is parsed,
and numbers are parsed only within their bounds (never an exponent expanded past them).
Reasons state facts about the row (values, dates, windows), never a distance from the clock.
Reading and printing the values themselves (timestamps, plain numbers): `fieldvalues`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple

from remediation.codes import ErrorCode
from remediation.fieldvalues import (
    MAX_INT_BITS,
    decimal_places,
    integer_digits,
    parse_timestamp,
    payload_text,
    plain_number,
    utc_text,
)
from remediation.jsonnumbers import JsonNumber
from remediation.limits import (
    CONTROL,
    DEFAULT_LIMITS,
    FieldLimits,
    control_character,
    shown,
)
from remediation.meters import Meter, by_event_name
from remediation.records import UsageRecord

MAX_FUTURE_SECONDS = 5 * 60
MAX_PAST_SECONDS = 35 * 86_400


class Problem(NamedTuple):
    code: str
    message: str


class MeterIndex:
    """Meters by event name (`meters.by_event_name`: an active meter over archived ones)."""

    def __init__(
        self,
        meters: Sequence[Meter],
        *,
        value_precision: int | None = None,
        limits: FieldLimits = DEFAULT_LIMITS,
    ) -> None:
        self.meters = tuple(meters)
        self.by_event = by_event_name(self.meters)
        self.limits = limits
        places = limits.max_value_decimal_places
        self.value_precision = places if value_precision is None else min(value_precision, places)

    def get(self, event_name: str | None) -> Meter | None:
        return self.by_event.get(event_name) if event_name is not None else None

    def active(self) -> list[Meter]:
        return [meter for meter in self.meters if meter.active]


def check_number(number: str, index: MeterIndex) -> Problem | None:
    """A plain number against the value limits: integer digits, then decimal places."""
    digits, most = integer_digits(number), index.limits.max_value_integer_digits
    if digits > most:
        message = f"value {shown(number)} has {digits} integer digits; at most {most} allowed"
        return Problem(ErrorCode.VALUE_TOO_MANY_DIGITS, message)
    precision = index.value_precision
    if precision is not None and decimal_places(number) > precision:
        message = f"value {shown(number)} has more than {precision} decimal places"
        return Problem(ErrorCode.VALUE_TOO_MANY_DIGITS, message)
    return None


def check_timestamp(raw: object, now: int) -> Problem | None:
    if raw is None:
        return None  # Stripe defaults a missing timestamp to the time it receives the event
    ts = parse_timestamp(raw)
    if ts is None:
        return Problem(ErrorCode.TIMESTAMP_INVALID, f"timestamp {shown(raw)} is not unix seconds")
    if ts > now + MAX_FUTURE_SECONDS:
        message = (
            f"timestamp {ts} ({utc_text(ts)}) is after {utc_text(now + MAX_FUTURE_SECONDS)}, "
            "5 minutes past the reference time"
        )
        return Problem(ErrorCode.TIMESTAMP_IN_FUTURE, message)
    if ts < now - MAX_PAST_SECONDS:
        message = (
            f"timestamp {ts} ({utc_text(ts)}) is before {utc_text(now - MAX_PAST_SECONDS)}, "
            "35 days before the reference time"
        )
        return Problem(ErrorCode.TIMESTAMP_TOO_FAR_IN_PAST, message)
    return None


# --- field limits --------------------------------------------------------------------------


def check_fields(record: UsageRecord, limits: FieldLimits) -> Problem | None:
    """The first field past a limit (length, control character), or a malformed row."""
    if record.malformed:
        return Problem(ErrorCode.MALFORMED_ROW, record.malformed)
    for name, text, most in (
        ("identifier", record.identifier, limits.max_identifier_chars),
        ("event_name", record.event_name, limits.max_event_name_chars),
    ):
        if text is not None:
            problem = check_text(name, text, most)
            if problem is not None:
                return problem
    stamp = record.timestamp
    if isinstance(stamp, str) and not stamp.isprintable() and CONTROL.search(stamp):
        return check_text("timestamp", stamp, len(stamp))
    if isinstance(stamp, dict | list):
        problem = check_nested("timestamp", stamp)
        if problem is not None:
            return problem
    return check_payload_fields(record.payload, limits)


def check_payload_fields(payload: dict[str, object], limits: FieldLimits) -> Problem | None:
    for key, value in payload.items():
        problem = check_text("payload key", key, limits.max_payload_key_chars)
        if problem is not None:
            return problem
        most = limits.max_payload_value_chars
        # The common case (a short printable text) costs two calls; the field's name for a
        # reason is only built for a value that breaks a limit.
        if isinstance(value, str):
            if len(value) > most or not value.isprintable():
                problem = check_text(f"payload value {shown(key)}", value, most)
        elif isinstance(value, float):  # bounded as written and as sent (`1e20`: 21 digits)
            written = value.text if isinstance(value, JsonNumber) else repr(value)
            name = f"payload value {shown(key)}"
            problem = check_text(name, written, most) or _sent_within(name, value, most)
        elif isinstance(value, bool):  # sent as `true`/`false`: bounded like its text
            problem = _sent_within(f"payload value {shown(key)}", value, most)
        elif isinstance(value, int):
            # its digits counted, not estimated from its bits (`10**100`, 101 digits, passed)
            if value.bit_length() > MAX_INT_BITS or len(str(value)) > most:
                digits = "thousands of" if value.bit_length() > MAX_INT_BITS else len(str(value))
                message = f"payload value {shown(key)} is a number of {digits} characters; "
                problem = Problem(ErrorCode.FIELD_TOO_LONG, message + f"at most {most} allowed")
        elif isinstance(value, dict | list):  # sent as its JSON text: bounded like one
            name = f"payload value {shown(key)}"
            # measured as sent (Python's `str()` of it is another length); its strings are
            # checked for control characters one by one
            problem = _sent_within(name, value, most) or check_nested(name, value)
        if problem is not None:
            return problem
    return None


def _sent_within(name: str, value: object, most: int) -> Problem | None:
    """A payload value that is no text, measured as a meter event sends it (`payload_text`)."""
    sent = payload_text(value)
    if len(sent) > most:
        message = f"{name} is sent as {len(sent)} characters; at most {most} allowed"
        return Problem(ErrorCode.FIELD_TOO_LONG, message)
    return None


def check_nested(name: str, value: dict[str, object] | list[object]) -> Problem | None:
    """The first key or string inside a JSON object or array (document order) holding a
    control character, named by its path (`[0]`, `["k"]`)."""
    pending: list[tuple[str, object]] = [("", value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            if not item.isprintable() and CONTROL.search(item):
                return check_text(f"{name} at {path}", item, len(item))
            continue
        children: list[tuple[str, object]] = []
        if isinstance(item, dict):
            for key, child in item.items():
                where = f"{path}[{json.dumps(str(key))}]"
                if not str(key).isprintable() and CONTROL.search(str(key)):
                    return check_text(f"{name} key at {where}", str(key), len(str(key)))
                children.append((where, child))
        elif isinstance(item, list):
            children = [(f"{path}[{at}]", child) for at, child in enumerate(item)]
        pending.extend(reversed(children))
    return None


def check_text(name: str, text: str, most: int) -> Problem | None:
    """`text` is at most `most` characters and holds no control character."""
    if len(text) > most:
        message = f"{name} is {len(text)} characters long; at most {most} allowed"
        return Problem(ErrorCode.FIELD_TOO_LONG, message)
    if not text.isprintable():  # cheap; most unprintable characters are allowed
        found = control_character(text)
        if found is not None:
            message = f"{name} {shown(text)} holds a control character: {found}"
            return Problem(ErrorCode.CONTROL_CHARACTER, message)
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
    if not is_customer_id(customer):
        return Problem(ErrorCode.NO_CUSTOMER_DEFINED, no_customer_id(meter.customer_key, customer))
    if meter.value_key not in payload:
        return Problem(ErrorCode.VALUE_NOT_FOUND, f"value key {meter.value_key} not in payload")
    number = plain_number(payload[meter.value_key])
    if number is None:
        raw = payload[meter.value_key]
        return Problem(ErrorCode.INVALID_VALUE, f"value {shown(raw)} is not a valid number")
    return check_number(number, index) or check_dimensions(payload, meter)


def is_customer_id(value: object) -> bool:
    """Whether a payload value can name a customer: text that is not blank, or a whole
    number (an external id a `[customers]` entry may map). `null` is none, nor is an object,
    a list, a boolean or a fraction: Stripe's payload is text, and sent as it was, such a
    row went out as corrected (`{"id": "cus_1"}` as the customer) to be refused again."""
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, int)


def no_customer_id(key: str, value: object) -> str:
    return f"customer key {key} holds {shown(value)}, which is no customer id"


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
    problem = check_fields(record, index.limits)
    if problem is not None:
        return problem
    meter, problem = check_meter(record, index)
    if problem is not None or meter is None:
        return problem
    return check_payload(record, meter, index) or check_timestamp(record.timestamp, now)
