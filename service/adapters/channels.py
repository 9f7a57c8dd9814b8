"""Where messages go: a channel sends one rendered message (Slack or email) or says why not.

The senders are `slack.py` and `smtp.py` beside this module; the runtime builds the
configured ones once from the settings (`build_channel`). A send is bounded in time (every
network call has a timeout) and retried inside the step for transient failures, then
raises `DeliveryFailed` with a reason that never carries the Slack URL or SMTP password.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # settings pull in pydantic: `meterfix remediate` with files reads none
    import ssl  # its libssl: 2 MB of a `meterfix remediate` run's peak RSS, for a type

    from service.config import Settings


class ChannelName(StrEnum):
    SLACK = "slack"
    EMAIL = "email"


@dataclass(frozen=True)
class Message:
    """One message in every form a channel needs: plain text (also the dry-run output),
    HTML for email, and Slack Block Kit messages (already split at Slack's limits)."""

    subject: str
    text: str
    html: str
    slack: Sequence[dict[str, Any]] = field(default_factory=tuple)


class Channel(Protocol):
    name: ChannelName

    def send(self, message: Message) -> None:
        """Deliver or raise DeliveryFailed."""


Sleep = Callable[[float], None]


def build_channels(
    settings: Settings,
    only: str | None = None,
    *,
    tls_context: ssl.SSLContext | None = None,
) -> list[Channel]:
    """The configured channels (Slack when SLACK_WEBHOOK_URL, email when SMTP_URL and
    DIGEST_EMAIL_TO), optionally only one of them by name."""
    names = [name for name in ChannelName if only in (None, name)]
    built = (build_channel(settings, name, tls_context=tls_context) for name in names)
    return [channel for channel in built if channel is not None]


def build_channel(
    settings: Settings, name: ChannelName, *, tls_context: ssl.SSLContext | None = None
) -> Channel | None:
    """The channel `name` when the settings configure it, else None (ValueError: a bad
    SMTP_URL). The senders' SDKs are imported only when a channel is built."""
    if name is ChannelName.SLACK and settings.slack_webhook_url:
        from service.adapters.slack import SlackChannel

        return SlackChannel(settings.slack_webhook_url)
    if name is ChannelName.EMAIL and settings.smtp_url and settings.digest_email_to:
        from service.adapters.smtp import EmailChannel

        return EmailChannel.from_settings(settings, tls_context=tls_context)
    return None


def settings_secrets(settings: Settings) -> list[str]:
    """What must never be logged or stored: the Slack URL and the SMTP password (and URL)."""
    from urllib.parse import unquote, urlsplit

    password = urlsplit(settings.smtp_url).password if settings.smtp_url else None
    secrets = [settings.slack_webhook_url, settings.smtp_url]
    return secrets + ([password, unquote(password)] if password else [])


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` with every non-empty secret replaced (error messages may quote a URL)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text[:1000]
