"""Error codes Stripe reports for meter events, and how a row's error text maps to one.

Stripe's code list is an open enum: unknown codes are kept verbatim and
reported under their own name; for remediation they behave as ``unclassified``.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum


class ErrorCode(StrEnum):
    CUSTOMER_NOT_FOUND = "meter_event_customer_not_found"
    NO_CUSTOMER_DEFINED = "meter_event_no_customer_defined"
    DIMENSION_COUNT_TOO_HIGH = "meter_event_dimension_count_too_high"
    MISSING_DIMENSION_KEYS = "missing_dimension_payload_keys"
    ARCHIVED_METER = "archived_meter"
    TIMESTAMP_TOO_FAR_IN_PAST = "timestamp_too_far_in_past"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    VALUE_NOT_FOUND = "meter_event_value_not_found"
    INVALID_VALUE = "meter_event_invalid_value"
    VALUE_TOO_MANY_DIGITS = "meter_event_value_too_many_digits"
    NO_METER = "no_meter"
    # meterfix's own codes (not Stripe's): found by our validation or by the reader.
    TIMESTAMP_INVALID = "timestamp_invalid"
    MALFORMED_ROW = "malformed_row"
    FIELD_TOO_LONG = "field_too_long"  # past a limit of `limits.FieldLimits`
    CONTROL_CHARACTER = "control_character"  # U+0000 to U+001F, U+007F, U+2028, U+2029
    # The bundled poller's: a row it sent once in a batch Stripe never acknowledged (a 5xx
    # past its retries, an answer lost) that fails our checks on a later pass (its meter
    # changed): Stripe may have billed it, so no rule corrects it under a new identifier and
    # no re-run sends it; quarantined for an operator who checks Stripe first.
    SENT_WITHOUT_ANSWER = "sent_without_answer"
    # A row that would go out (corrected, or sent again as it came) under an identifier
    # Stripe took an event under from another row of its file (a row counted valid of a usage
    # file, a row of a failed-records file's object that Stripe did not refuse: `core.sameids`):
    # Stripe billed that identifier, so a second event under it, or under `<id>-mfx1`, would
    # be billed twice. Never corrected, never sent by a re-run, as `sent_without_answer`.
    IDENTIFIER_TAKEN = "identifier_taken"
    UNCLASSIFIED = "unclassified"


KNOWN_CODES: frozenset[str] = frozenset(code.value for code in ErrorCode)

# Codes of rows Stripe may have billed (or billed) under their identifier: a row arriving with
# one (handed over by the poller, a quarantine re-run's) is quarantined again whatever our
# checks say of it, never corrected, never re-sent (`core.decide`, `service.jobs.rerun_records`).
NEVER_RESENT: frozenset[str] = frozenset(
    (ErrorCode.SENT_WITHOUT_ANSWER.value, ErrorCode.IDENTIFIER_TAKEN.value)
)

# The message of a row an error report's run selected because it changed since Stripe refused
# it (`reported.select_reported`; no code: our validation decides, and valid it is sent as it
# is now). Ours, not Stripe's: the one message no code stands for that does not make a row
# `unclassified` (`core.decide`).
CHANGED_SINCE_SENT = "changed in its file since Stripe refused it: sent as it is now"

# Message texts Stripe is known (or, [INF], likely) to send, most specific first.
_MESSAGE_PATTERNS: tuple[tuple[re.Pattern[str], ErrorCode], ...] = (
    (re.compile(r"customer mapping key .* not found", re.I), ErrorCode.NO_CUSTOMER_DEFINED),
    (re.compile(r"no meter was found matching event_name", re.I), ErrorCode.NO_METER),
    (
        re.compile(r"no customer .*(found|exists)|customer .* (was )?not found", re.I),
        ErrorCode.CUSTOMER_NOT_FOUND,
    ),
    (
        re.compile(r"(archived|inactive|deactivated) meter|meter .* (is )?not active", re.I),
        ErrorCode.ARCHIVED_METER,
    ),
    (
        re.compile(r"too far in the past|older than 35|more than 35 (calendar )?days", re.I),
        ErrorCode.TIMESTAMP_TOO_FAR_IN_PAST,
    ),
    (re.compile(r"in the future", re.I), ErrorCode.TIMESTAMP_IN_FUTURE),
    (re.compile(r"too many (decimal )?digits|precision", re.I), ErrorCode.VALUE_TOO_MANY_DIGITS),
    (
        re.compile(r"value (key )?.*not found|must have a value|missing value", re.I),
        ErrorCode.VALUE_NOT_FOUND,
    ),
    (
        re.compile(r"invalid value|value must be|not a (valid )?number", re.I),
        ErrorCode.INVALID_VALUE,
    ),
    (re.compile(r"too many dimensions|dimension count", re.I), ErrorCode.DIMENSION_COUNT_TOO_HIGH),
    (re.compile(r"dimension .*(missing|not found)", re.I), ErrorCode.MISSING_DIMENSION_KEYS),
)

_CODE_TOKEN = re.compile(r"^[a-z][a-z0-9_.]*$")


def looks_like_code(text: str) -> bool:
    """`meter_event_invalid_value` is a code; `Value must be a number.` is a message."""
    return bool(_CODE_TOKEN.match(text.strip().lower())) and " " not in text.strip()


def code_from_message(message: str | None) -> ErrorCode | None:
    """The code a known message text stands for, or None."""
    if not message:
        return None
    for pattern, code in _MESSAGE_PATTERNS:
        if pattern.search(message):
            return code
    return None


def first_code(errors: str) -> str | None:
    """First code in an `errors` cell: a JSON list/object, or codes separated by `;`, `,`, `|`."""
    text = errors.strip()
    if not text:
        return None
    if text[0] in "[{":
        try:
            return _code_in_json(json.loads(text))
        except ValueError:
            pass
    for part in re.split(r"[;,|]", text):
        if looks_like_code(part):
            return part.strip().lower()
    return None


def _code_in_json(value: object) -> str | None:
    if isinstance(value, list):
        for item in value:
            found = _code_in_json(item)
            if found:
                return found
        return None
    if isinstance(value, dict):
        code = value.get("code")
        return str(code).strip().lower() if code else None
    if isinstance(value, str) and looks_like_code(value):
        return value.strip().lower()
    return None


def normalize_code(code: str | None) -> str | None:
    """Lower-case and trim a reported code; empty becomes None. Unknown codes are kept."""
    if code is None:
        return None
    text = code.strip().lower()
    return text or None


def is_known(code: str) -> bool:
    return code in KNOWN_CODES
