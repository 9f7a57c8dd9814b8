"""The per-process runtime: the settings, and every adapter built once from them.

Nothing is built at import time: each adapter is a cached property, made on first use.
`create_app` makes one Runtime and stores it on the app (`install`); blueprints and commands
get it with `runtime()` from this module, which imports none of them. The worker and the
scheduled jobs make their own. Tests inject fakes through the constructor (`engine=`,
`stripe_client=`) or by setting a property first.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import stripe
from flask import current_app
from flask.sansio.app import App
from sqlalchemy import Engine

from remediation.ports import Bucket
from remediation.rules import Rules, load_rules
from service.adapters.bucket import open_bucket
from service.adapters.customers import StripeCustomerDirectory
from service.adapters.meter_events import StripeMeterEventSink
from service.adapters.stripe_client import build_stripe_client
from service.adapters.stripe_events import WebhookVerifier
from service.adapters.stripe_files import StripeFileStore
from service.adapters.stripe_meters import StripeMeterSource
from service.config import Settings
from service.db import make_engine

# The SDK's own retries of a failed call (429, 5xx, dropped connections) inside one step.
DEFAULT_STRIPE_NETWORK_RETRIES = 2


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        stripe_client: stripe.StripeClient | None = None,
        stripe_network_retries: int = DEFAULT_STRIPE_NETWORK_RETRIES,
    ) -> None:
        self.settings = settings
        self.stripe_network_retries = stripe_network_retries
        self._owns_engine = engine is None
        if engine is not None:
            self.__dict__["engine"] = engine
        if stripe_client is not None:
            self.__dict__["stripe_client"] = stripe_client

    @cached_property
    def engine(self) -> Engine:
        return make_engine(
            self.settings.database_url, synchronous=self.settings.mfx_sqlite_synchronous
        )

    @cached_property
    def stripe_client(self) -> stripe.StripeClient:
        return build_stripe_client(self.settings, max_network_retries=self.stripe_network_retries)

    @cached_property
    def bucket(self) -> Bucket:
        return open_bucket(self.settings)

    @cached_property
    def rules(self) -> Rules:
        """Built-in defaults merged with MFX_RULES (a TOML file), when set."""
        path = self.settings.mfx_rules
        return load_rules(Path(path).read_text(encoding="utf-8") if path else None)

    @cached_property
    def meter_source(self) -> StripeMeterSource:
        return StripeMeterSource(self.stripe_client)

    @cached_property
    def file_store(self) -> StripeFileStore:
        settings = self.settings
        return StripeFileStore(
            self.stripe_client, settings.stripe_files_base, settings.stripe_api_key
        )

    @cached_property
    def customers(self) -> StripeCustomerDirectory:
        return StripeCustomerDirectory(self.stripe_client)

    @cached_property
    def meter_event_sink(self) -> StripeMeterEventSink:
        return StripeMeterEventSink(self.stripe_client, self.settings)

    @cached_property
    def verifier(self) -> WebhookVerifier:
        settings = self.settings
        return WebhookVerifier(
            settings.stripe_webhook_secrets, settings.stripe_webhook_tolerance, self.stripe_client
        )

    def close(self) -> None:
        if self._owns_engine and "engine" in self.__dict__:
            self.engine.dispose()


# The Runtime of the app at hand, for blueprints and commands. This module imports none of
# them, so they never import the app factory (which imports them).
EXTENSION = "meterfix"


def install(app: App, runtime: Runtime) -> None:
    app.extensions[EXTENSION] = runtime


def runtime_of(app: App) -> Runtime:
    value: Runtime = app.extensions[EXTENSION]
    return value


def runtime() -> Runtime:
    """The Runtime of the app handling the current request or command."""
    return runtime_of(current_app)
