"""Meter configuration as remediation needs it, parsed from Stripe's meter objects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Meter:
    id: str
    event_name: str
    status: str = "active"
    customer_key: str = "stripe_customer_id"
    value_key: str = "value"
    display_name: str = ""
    # Not in the 16.1.0 Meter model; kept when present (preview dimension feature).
    dimension_keys: tuple[str, ...] = field(default_factory=tuple)

    @property
    def active(self) -> bool:
        return self.status == "active"

    @classmethod
    def from_stripe(cls, obj: Mapping[str, Any]) -> Meter:
        """Build from a `billing.meter` object (as returned by GET /v1/billing/meters)."""
        customer = obj.get("customer_mapping") or {}
        value = obj.get("value_settings") or {}
        dims = obj.get("dimension_payload_keys") or ()
        return cls(
            id=str(obj.get("id", "")),
            event_name=str(obj["event_name"]),
            status=str(obj.get("status", "active")),
            customer_key=str(customer.get("event_payload_key") or "stripe_customer_id"),
            value_key=str(value.get("event_payload_key") or "value"),
            display_name=str(obj.get("display_name") or ""),
            dimension_keys=tuple(str(d) for d in dims),
        )


def parse_meters(document: Any) -> list[Meter]:
    """Accept what GET /v1/billing/meters returns ({"data": [...]}) or a plain list."""
    items: Iterable[Any]
    if isinstance(document, Mapping):
        if "data" not in document:
            raise ValueError("meters document must be a list or an object with 'data'")
        items = document["data"]
    elif isinstance(document, list):
        items = document
    else:
        raise ValueError("meters document must be a list or an object with 'data'")
    meters = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or "event_name" not in item:
            raise ValueError(f"meter #{index} has no event_name")
        meters.append(Meter.from_stripe(item))
    return meters
