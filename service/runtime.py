"""The builder: the settings, and every adapter built once from them.

`Adapters` holds the settings and everything that talks to the outside world (Stripe, the
bucket, the rules file, the meters, Slack and SMTP); `Runtime` adds the database engine. Each
is a cached property, made on first use: nothing is built at import time, and nothing else
reads the settings (`config.load_settings`) or constructs an adapter.

Importing this module is light on purpose: the SDKs, SQLAlchemy and Flask are imported inside
the property that needs them (and for type annotations only under TYPE_CHECKING), so
`meterfix validate` and `meterfix remediate` build `Adapters` alone and start without the web
and database stack. `create_app` makes one Runtime and stores it on the app (`install`);
blueprints and commands get it with `runtime()` from this module, which imports none of them.
The worker and the scheduled jobs make their own. Tests inject fakes through the constructor
(`engine=`, `stripe_client=`, `smtp_tls_context=`) or by setting a property first.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

from service.adapters.channels import Channel, ChannelName, build_channel

if TYPE_CHECKING:  # annotations only: importing these at run time is what this module avoids
    import ssl

    import stripe
    from flask.sansio.app import App
    from sqlalchemy import Engine

    from remediation.meters import Meter
    from remediation.ports import Bucket
    from remediation.rules import Rules
    from service.adapters.customers import StripeCustomerDirectory
    from service.adapters.meter_events import StripeMeterEventSink
    from service.adapters.stripe_events import WebhookVerifier
    from service.adapters.stripe_files import StripeFileStore
    from service.adapters.stripe_meters import StripeMeterSource
    from service.config import Settings

# The SDK's own retries of a failed call (429, 5xx, dropped connections) inside one step.
DEFAULT_STRIPE_NETWORK_RETRIES = 2


class Adapters:
    """The settings and every outside-world adapter, each built once on first use.

    `settings`: read from the environment on first use when not given (a file command given
    `--rules` and `--meters` reads none). `rules_path` and `meters_path` override MFX_RULES and
    the meters from Stripe (`--rules`, `--meters`). `stripe_network_retries=None`: one quick
    try under the embedded sandbox (nothing may answer there), the default otherwise."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        stripe_client: stripe.StripeClient | None = None,
        stripe_network_retries: int | None = DEFAULT_STRIPE_NETWORK_RETRIES,
        rules_path: str | None = None,
        meters_path: str | None = None,
        smtp_tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if settings is not None:
            self.__dict__["settings"] = settings
        if stripe_client is not None:
            self.__dict__["stripe_client"] = stripe_client
        self._stripe_network_retries = stripe_network_retries
        self._rules_path = rules_path
        self.meters_path = meters_path
        self._smtp_tls_context = smtp_tls_context
        self._channels: dict[ChannelName, Channel | None] = {}

    @cached_property
    def settings(self) -> Settings:
        from service.config import load_settings  # pydantic: only a process that reads them

        return load_settings()

    @property
    def stripe_network_retries(self) -> int:
        if self._stripe_network_retries is not None:
            return self._stripe_network_retries
        return 0 if self.settings.embedded_sandbox else DEFAULT_STRIPE_NETWORK_RETRIES

    @cached_property
    def stripe_client(self) -> stripe.StripeClient:
        from service.adapters.stripe_client import build_stripe_client

        return build_stripe_client(self.settings, max_network_retries=self.stripe_network_retries)

    @cached_property
    def bucket(self) -> Bucket:
        from service.adapters.bucket import open_bucket

        return open_bucket(self.settings)

    @property
    def rules_path(self) -> str | None:
        """`--rules` when given, else MFX_RULES; None: the built-in defaults alone."""
        return self._rules_path or self.settings.mfx_rules or None

    @cached_property
    def rules(self) -> Rules:
        """Built-in defaults merged with the rules file (TOML), when there is one. OSError:
        the file cannot be read; remediation's MeterfixError: it holds bad rules."""
        from remediation.errors import BadRules
        from remediation.rules import load_rules

        path = self.rules_path
        return load_rules(config_bytes(path, BadRules) if path else None)  # decoded as rules

    @cached_property
    def meter_source(self) -> StripeMeterSource:
        from service.adapters.stripe_meters import StripeMeterSource

        return StripeMeterSource(self.stripe_client)

    @cached_property
    def meters(self) -> list[Meter]:
        """The meters of `meters_path` (what GET /v1/billing/meters returns, or a list of
        meters), else every meter from Stripe. OSError, ValueError (not JSON) or remediation's
        MeterfixError (not meters) for a file; the SDK's errors for Stripe."""
        if self.meters_path is None:
            return list(self.meter_source.meters())
        from remediation.errors import BadMeters
        from remediation.meters import load_meters

        return load_meters(config_bytes(self.meters_path, BadMeters))

    @cached_property
    def file_store(self) -> StripeFileStore:
        from service.adapters.stripe_files import StripeFileStore

        settings = self.settings
        return StripeFileStore(
            self.stripe_client,
            settings.stripe_files_base,
            settings.stripe_api_key,
            transfer_seconds=settings.mfx_task_time_limit,
        )

    def customer_directory(self) -> StripeCustomerDirectory:
        """A directory of its own for one run: what Stripe answered about a customer holds
        for that run, not for the worker's life (the operator may make the customer and
        re-run its rows)."""
        from service.adapters.customers import StripeCustomerDirectory

        return StripeCustomerDirectory(self.stripe_client)

    @cached_property
    def meter_event_sink(self) -> StripeMeterEventSink:
        from service.adapters.meter_events import StripeMeterEventSink

        return StripeMeterEventSink(self.stripe_client, self.settings)

    @cached_property
    def verifier(self) -> WebhookVerifier:
        from service.adapters.stripe_events import WebhookVerifier

        settings = self.settings
        return WebhookVerifier(
            settings.stripe_webhook_secrets, settings.stripe_webhook_tolerance, self.stripe_client
        )

    @property
    def channels(self) -> list[Channel]:
        """The configured channels, Slack first (ValueError: a bad SMTP_URL)."""
        built = (self.channel(name) for name in ChannelName)
        return [channel for channel in built if channel is not None]

    def channel(self, name: ChannelName) -> Channel | None:
        """The channel `name` (`meterfix digest --channel`), built once; None when the
        settings do not configure it (ValueError: a bad SMTP_URL)."""
        if name not in self._channels:
            self._channels[name] = build_channel(
                self.settings, name, tls_context=self._smtp_tls_context
            )
        return self._channels[name]


MAX_CONFIG_BYTES = 256 << 20  # a rules or meters file (a million-customer map is ~40 MB)


def config_bytes(path: str, refused: Callable[[str], Exception]) -> bytes:
    """The bytes of a rules or meters file. OSError: it cannot be read; `refused(reason)`:
    it is no regular file (a FIFO would block the opening, `/dev/zero` never ends) or it is
    larger than MAX_CONFIG_BYTES."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise refused("not a regular file")
    with open(path, "rb") as file:
        data = file.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise refused(f"larger than {MAX_CONFIG_BYTES} bytes")
    return data


class Runtime(Adapters):
    """The adapters of a process that also uses the database (the app, the worker, the
    scheduled jobs and the commands that need them)."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        stripe_client: stripe.StripeClient | None = None,
        stripe_network_retries: int = DEFAULT_STRIPE_NETWORK_RETRIES,
        smtp_tls_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            settings,
            stripe_client=stripe_client,
            stripe_network_retries=stripe_network_retries,
            smtp_tls_context=smtp_tls_context,
        )
        self._owns_engine = engine is None
        if engine is not None:
            self.__dict__["engine"] = engine

    @cached_property
    def engine(self) -> Engine:
        from service.db import make_engine

        return make_engine(
            self.settings.database_url, synchronous=self.settings.mfx_sqlite_synchronous
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
    from flask import current_app

    return runtime_of(current_app)
