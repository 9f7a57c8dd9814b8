"""The embedded defaults: with no Stripe setting at all, the service talks to the bundled
sandbox (its key, its webhook secret, its hosts) in place of Stripe's hosts below."""

from __future__ import annotations

from typing import Protocol

from sandbox.defaults import (
    SANDBOX_API_KEY,
    SANDBOX_BASE,
    SANDBOX_WEBHOOK_SECRET,
    sandbox_bases,
)

STRIPE_API_BASE = "https://api.stripe.com"
STRIPE_FILES_BASE = "https://files.stripe.com"
STRIPE_METER_EVENTS_BASE = "https://meter-events.stripe.com"


class StripeSettings(Protocol):
    """The settings the embedded defaults read and set (`service.config.Settings`')."""

    stripe_api_key: str
    stripe_webhook_secrets: list[str]
    embedded_sandbox: bool


def use_embedded_sandbox(settings: StripeSettings) -> None:
    """No API key and no secrets: point everything at the bundled sandbox (and say so)."""
    if settings.stripe_api_key or settings.stripe_webhook_secrets:
        settings.embedded_sandbox = False
        return
    settings.embedded_sandbox = True
    settings.stripe_api_key = SANDBOX_API_KEY
    settings.stripe_webhook_secrets = [SANDBOX_WEBHOOK_SECRET]
    bases = sandbox_bases(SANDBOX_BASE)  # each host on its own URL, as at Stripe
    for name, host in (
        ("stripe_api_base", "api"),
        ("stripe_files_base", "files"),
        ("stripe_meter_events_base", "meter_events"),
    ):
        if getattr(settings, name) in (
            STRIPE_API_BASE,
            STRIPE_FILES_BASE,
            STRIPE_METER_EVENTS_BASE,
        ):
            setattr(settings, name, bases[host])
