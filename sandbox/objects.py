"""Builders for the Stripe-shaped resource objects the sandbox stores and serves."""

from __future__ import annotations

from typing import Any

from sandbox.clock import new_id, now

JSON = dict[str, Any]

DEFAULT_CUSTOMER_KEY = "stripe_customer_id"
DEFAULT_VALUE_KEY = "value"


def build_meter(spec: JSON) -> JSON:
    """A `billing.meter` from the admin API's loose spec (only `event_name` is required)."""
    created = int(now())
    status = spec.get("status", "active")
    return {
        "id": spec.get("id") or new_id("mtr_test"),
        "object": "billing.meter",
        "created": created,
        "updated": created,
        "display_name": spec.get("display_name") or spec["event_name"],
        "event_name": spec["event_name"],
        "event_time_window": spec.get("event_time_window"),
        "status": status,
        "status_transitions": {"deactivated_at": created if status == "inactive" else None},
        "customer_mapping": spec.get("customer_mapping")
        or {"event_payload_key": DEFAULT_CUSTOMER_KEY, "type": "by_id"},
        "default_aggregation": spec.get("default_aggregation") or {"formula": "sum"},
        "value_settings": spec.get("value_settings") or {"event_payload_key": DEFAULT_VALUE_KEY},
        "livemode": False,
    }


def build_customer(spec: JSON) -> JSON:
    return {
        "id": spec.get("id") or new_id("cus_test", 14),
        "object": "customer",
        "created": int(now()),
        "email": spec.get("email"),
        "name": spec.get("name"),
        "description": spec.get("description"),
        "metadata": dict(spec.get("metadata") or {}),
        "livemode": False,
    }


def deleted_customer(customer_id: str) -> JSON:
    """What Stripe keeps of a deleted customer: retrieving it answers this stub (200)."""
    return {"id": customer_id, "object": "customer", "deleted": True}


def is_deleted(customer: JSON) -> bool:
    return bool(customer.get("deleted"))


def build_file(filename: str, purpose: str, size: int) -> JSON:
    """A `file` object without `url`: the url is the serving sandbox's own, added when served."""
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else None
    return {
        "id": new_id("file_test"),
        "object": "file",
        "created": int(now()),
        "expires_at": None,
        "filename": filename,
        "links": None,
        "purpose": purpose,
        "size": size,
        "title": None,
        "type": extension,
    }


def list_object(url: str, data: list[JSON], has_more: bool) -> JSON:
    return {"object": "list", "url": url, "has_more": has_more, "data": data}


def search_result(url: str, data: list[JSON]) -> JSON:
    return {
        "object": "search_result",
        "url": url,
        "has_more": False,
        "next_page": None,
        "data": data,
    }
