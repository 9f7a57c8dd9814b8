"""The remediation rules, one function per error code, listed in one registry (`RULES`).

Each takes the rows that failed with its code as a `Batch` and returns a `Fix` (see `base`).
DESIGN's table of rules maps onto these functions one to one; nothing else knows how a rule
works. No rule sees a row past the field limits: the engine refuses those first (a fuzzy match
over a 10 MB event name, or an exponent expanded into a million digits, would never end).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from remediation.codes import ErrorCode
from remediation.core.rules.base import Changes, Fix, Rule
from remediation.core.rules.customers import fix_customer
from remediation.core.rules.fields import refuse_field
from remediation.core.rules.keys import (
    drop_unused_keys,
    fill_customer_key,
    fill_dimensions,
    rename_value_key,
)
from remediation.core.rules.meters import fix_event_name, reroute_to_successor
from remediation.core.rules.timestamps import fix_timestamp, refuse_past
from remediation.core.rules.values import fix_value, round_value

RULES: Mapping[str, Rule] = MappingProxyType(
    {
        ErrorCode.TIMESTAMP_IN_FUTURE: fix_timestamp,
        ErrorCode.TIMESTAMP_INVALID: fix_timestamp,
        ErrorCode.TIMESTAMP_TOO_FAR_IN_PAST: refuse_past,
        ErrorCode.INVALID_VALUE: fix_value,
        ErrorCode.VALUE_TOO_MANY_DIGITS: round_value,
        ErrorCode.VALUE_NOT_FOUND: rename_value_key,
        ErrorCode.NO_CUSTOMER_DEFINED: fill_customer_key,
        ErrorCode.CUSTOMER_NOT_FOUND: fix_customer,
        ErrorCode.NO_METER: fix_event_name,
        ErrorCode.ARCHIVED_METER: reroute_to_successor,
        ErrorCode.DIMENSION_COUNT_TOO_HIGH: drop_unused_keys,
        ErrorCode.MISSING_DIMENSION_KEYS: fill_dimensions,
        ErrorCode.FIELD_TOO_LONG: refuse_field,
        ErrorCode.CONTROL_CHARACTER: refuse_field,
        ErrorCode.MALFORMED_ROW: refuse_field,
    }
)

__all__ = ["RULES", "Changes", "Fix", "Rule"]
