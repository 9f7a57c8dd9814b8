"""Meter configuration as remediation needs it, parsed from Stripe's meter objects."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from remediation.errors import BadMeters
from remediation.limits import DEFAULT_LIMITS, control_character, shown

DEFAULT_CUSTOMER_KEY = "stripe_customer_id"  # Stripe's default `customer_mapping` key


@dataclass(frozen=True, slots=True)
class Meter:
    id: str
    event_name: str
    status: str = "active"
    customer_key: str = DEFAULT_CUSTOMER_KEY
    value_key: str = "value"
    display_name: str = ""
    # Not in the 16.1.0 Meter model; kept when present (preview dimension feature).
    dimension_keys: tuple[str, ...] = field(default_factory=tuple)
    # `status_transitions.deactivated_at` (unix seconds) of an archived meter, when Stripe says:
    # rows Stripe took before it were billed (remediation.reported).
    deactivated_at: int | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    @classmethod
    def from_stripe(cls, obj: Mapping[str, Any]) -> Meter:
        """Build from a `billing.meter` object (as returned by GET /v1/billing/meters);
        raise BadMeters when a part it needs has the wrong shape."""
        event_name = _name(obj, "event_name", obj.get("event_name"))
        dims = obj.get("dimension_payload_keys") or ()
        if not isinstance(dims, list | tuple):
            raise BadMeters(f"meter {obj.get('id')!r}: dimension_payload_keys is not a list")
        meter = cls(
            id=str(obj.get("id", "")),
            event_name=event_name,
            status=_name(obj, "status", obj.get("status", "active")),
            customer_key=_payload_key(obj, "customer_mapping", DEFAULT_CUSTOMER_KEY),
            value_key=_payload_key(obj, "value_settings", "value"),
            display_name=str(obj.get("display_name") or ""),
            dimension_keys=tuple(str(d) for d in dims),
            deactivated_at=_seconds(_object(obj, "status_transitions").get("deactivated_at")),
        )
        if meter.customer_key == meter.value_key:  # a row could not name both
            raise BadMeters(
                f"meter {meter.id!r}: payload key {meter.customer_key!r} is both its customer "
                "key and its value key"
            )
        return meter


def _name(obj: Mapping[str, Any], what: str, value: object) -> str:
    """A meter's event name, status or payload key: text Stripe could hold (it limits names to
    100 characters; no control character is in any field sent to it)."""
    where = f"meter {obj.get('id')!r}"
    if not isinstance(value, str) or not value:
        raise BadMeters(f"{where} has no {what} string (it holds {shown(value)})")
    most = DEFAULT_LIMITS.max_event_name_chars
    if len(value) > most:
        raise BadMeters(f"{where}: {what} {shown(value)} is longer than {most} characters")
    bad = control_character(value)
    if bad is not None:
        raise BadMeters(f"{where}: {what} {shown(value)} holds a control character ({bad})")
    return value


def _payload_key(obj: Mapping[str, Any], part: str, default: str) -> str:
    key = _object(obj, part).get("event_payload_key")
    return default if key is None or key == "" else _name(obj, f"{part}.event_payload_key", key)


def _seconds(value: object) -> int | None:
    """Unix seconds as Stripe gives them (an integer), or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def by_event_name(meters: Iterable[Meter]) -> dict[str, Meter]:
    """One meter an event name: an active one over archived ones (Stripe allows one active
    meter an event name, and keeps archived meters of that name beside it), else the first
    listed (Stripe lists the newest first)."""
    chosen: dict[str, Meter] = {}
    for meter in meters:
        held = chosen.get(meter.event_name)
        if held is None or (meter.active and not held.active):
            chosen[meter.event_name] = meter
    return chosen


def customer_keys(meters: Iterable[Meter]) -> dict[str, str]:
    """Each event name's customer key (its meter's, as `by_event_name` picks it)."""
    return {name: meter.customer_key for name, meter in by_event_name(meters).items()}


def _object(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key) or {}
    if not isinstance(value, Mapping):
        kind = type(value).__name__
        raise BadMeters(f"meter {obj.get('id')!r}: {key} is a {kind}, not an object")
    return value


def load_meters(data: bytes) -> list[Meter]:
    """The meters of a JSON document as read from a file (UTF-8, with or without a byte order
    mark); BadMeters when it is not JSON or not meters."""
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise BadMeters(
            f"meters are not UTF-8: byte 0x{data[exc.start]:02x} at {exc.start}"
        ) from exc
    except ValueError as exc:
        raise BadMeters(f"meters are not JSON: {exc}") from exc
    except RecursionError as exc:  # the decoder's guard: far deeper than any meter
        raise BadMeters("meters JSON is nested too deep to read") from exc
    return parse_meters(document)


def parse_meters(document: Any) -> list[Meter]:
    """Accept what GET /v1/billing/meters returns ({"data": [...]}) or a plain list; raise
    BadMeters with the reason for anything else."""
    items = document
    if isinstance(document, Mapping):
        if "data" not in document:
            raise BadMeters("meters document must be a list or an object with 'data'")
        items = document["data"]
        if not isinstance(items, list):
            kind = "null" if items is None else type(items).__name__
            raise BadMeters(f"meters document: 'data' is {kind}, not a list of meters")
    elif not isinstance(document, list):
        raise BadMeters("meters document must be a list or an object with 'data'")
    meters = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise BadMeters(f"meter #{index} is a {type(item).__name__}, not an object")
        if "event_name" not in item:
            raise BadMeters(f"meter #{index} has no event_name")
        meters.append(Meter.from_stripe(item))
    _one_active_an_event_name(meters)
    return meters


def _one_active_an_event_name(meters: Iterable[Meter]) -> None:
    """Stripe keeps one active meter an event name: a file with two could not say which one a
    row of that name is for."""
    active: dict[str, Meter] = {}
    for meter in meters:
        if meter.active and active.setdefault(meter.event_name, meter) is not meter:
            first = active[meter.event_name]
            raise BadMeters(
                f"meters {first.id!r} and {meter.id!r} are both active with event_name "
                f"{meter.event_name!r} (Stripe allows one active meter an event name)"
            )
