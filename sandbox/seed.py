"""Demo data for `meterfix sandbox --seed` and `meterfix trigger`."""

from __future__ import annotations

from sandbox.objects import JSON, build_customer, build_meter
from sandbox.state import SandboxState

DEMO_METERS: list[JSON] = [
    {"event_name": "api_requests", "display_name": "API requests"},
    {
        "event_name": "tokens",
        "display_name": "Tokens",
        "value_settings": {"event_payload_key": "tokens"},
    },
]
DEMO_CUSTOMERS: list[JSON] = [
    {"id": "cus_demo_alice", "name": "Alice", "metadata": {"external_id": "acme-42"}},
    {"id": "cus_demo_bob", "name": "Bob", "metadata": {"external_id": "globex-7"}},
]


def seed_demo(state: SandboxState) -> None:
    """Add the demo meters and customers (skipping event names that already have a meter)."""
    with state.lock:
        for spec in DEMO_METERS:
            if state.meter_for_event_name(spec["event_name"]) is None:
                meter = build_meter(spec)
                state.meters[meter["id"]] = meter
        for spec in DEMO_CUSTOMERS:
            state.customers.setdefault(spec["id"], build_customer(spec))
