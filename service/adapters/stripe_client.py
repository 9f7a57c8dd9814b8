"""One way to build a StripeClient: configured hosts only, never a URL taken from a payload."""

from __future__ import annotations

import stripe

from service.config import Settings


def build_stripe_client(settings: Settings, *, max_network_retries: int = 2) -> stripe.StripeClient:
    stripe.enable_telemetry = False
    return stripe.StripeClient(
        settings.stripe_api_key,
        base_addresses={
            "api": settings.stripe_api_base,
            "files": settings.stripe_files_base,
            "meter_events": settings.stripe_meter_events_base,
        },
        max_network_retries=max_network_retries,
    )
