"""v1 request parameters checked as Stripe checks them: a parameter the endpoint does not
take, a nested value where a string belongs, an integer out of its range or a value outside
an enum answers 400 at once (Stripe never clamps or ignores them)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from sandbox.errors import StripeApiError

LIST_LIMIT_DEFAULT = 10
LIST_LIMIT_RANGE = (1, 100)
METER_STATUSES = ("active", "inactive")
METER_EVENT_FIELDS = frozenset({"event_name", "identifier", "timestamp"})
_INTEGER = re.compile(r"-?[0-9]{1,19}")  # ASCII digits only, as in sandbox/validation.py
_PAYLOAD_ENTRY = re.compile(r"payload\[(?P<key>[^\[\]]+)\]")


def list_limit(args: Mapping[str, str]) -> int:
    """A list's `limit`: an integer from 1 to 100 (default 10)."""
    text = args.get("limit")
    if text is None:
        return LIST_LIMIT_DEFAULT
    if not _INTEGER.fullmatch(text):
        raise _invalid_integer(f"Invalid integer: {text[:40]}")
    limit, (lowest, highest) = int(text), LIST_LIMIT_RANGE
    if limit < lowest:
        raise _invalid_integer(f"This value must be greater than or equal to {lowest}.")
    if limit > highest:
        raise _invalid_integer(f"This value must be less than or equal to {highest}.")
    return limit


def _invalid_integer(message: str) -> StripeApiError:
    return StripeApiError(400, message, "parameter_invalid_integer", "limit")


def meter_status(args: Mapping[str, str]) -> str | None:
    """The meter list's `status` filter: `active`, `inactive` or none."""
    status = args.get("status") or None
    if status is not None and status not in METER_STATUSES:
        message = f"Invalid status: must be one of {' or '.join(METER_STATUSES)}"
        raise StripeApiError(400, message, None, "status")
    return status


def meter_event_payload(form: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The `payload[<key>]` entries of a v1 meter event form (a string -> string map), after
    refusing every name that is neither one of them nor a field the endpoint takes."""
    payload: dict[str, str] = {}
    for name, value in form:
        entry = _PAYLOAD_ENTRY.fullmatch(name)
        if entry is not None:
            payload[entry["key"]] = value
        elif name == "payload" or name.startswith("payload["):
            raise _not_a_string_map(name)
        elif name not in METER_EVENT_FIELDS:
            message = f"Received unknown parameter: {name}"
            raise StripeApiError(400, message, "parameter_unknown", name)
    return payload


def _not_a_string_map(name: str) -> StripeApiError:
    """`payload=x` (not a hash) or `payload[k][j]=x` / `payload[]=x` (not a string value)."""
    if name == "payload":
        return StripeApiError(400, "Invalid hash", None, "payload")
    param = name.split("]", 1)[0] + "]"
    message = f"Invalid {param}: payload is a map of string keys to string values"
    return StripeApiError(400, message, None, param)
