"""Meter configuration as remediation needs it, parsed from Stripe's meter objects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from remediation.errors import BadMeters

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
        event_name = obj.get("event_name")
        if not isinstance(event_name, str) or not event_name:
            raise BadMeters(f"meter {obj.get('id')!r} has no event_name string")
        customer = _object(obj, "customer_mapping")
        value = _object(obj, "value_settings")
        dims = obj.get("dimension_payload_keys") or ()
        if not isinstance(dims, list | tuple):
            raise BadMeters(f"meter {obj.get('id')!r}: dimension_payload_keys is not a list")
        return cls(
            id=str(obj.get("id", "")),
            event_name=event_name,
            status=str(obj.get("status", "active")),
            customer_key=str(customer.get("event_payload_key") or DEFAULT_CUSTOMER_KEY),
            value_key=str(value.get("event_payload_key") or "value"),
            display_name=str(obj.get("display_name") or ""),
            dimension_keys=tuple(str(d) for d in dims),
            deactivated_at=_seconds(_object(obj, "status_transitions").get("deactivated_at")),
        )


def _seconds(value: object) -> int | None:
    """Unix seconds as Stripe gives them (an integer), or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def customer_keys(meters: Iterable[Meter]) -> dict[str, str]:
    """Each event name's customer key (the last meter's, when several share a name)."""
    return {meter.event_name: meter.customer_key for meter in meters}


def _object(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key) or {}
    if not isinstance(value, Mapping):
        kind = type(value).__name__
        raise BadMeters(f"meter {obj.get('id')!r}: {key} is a {kind}, not an object")
    return value


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
    return meters
