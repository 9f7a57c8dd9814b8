"""Where messages go: a channel sends one rendered message (Slack or email) or says why not.

The senders are `slack.py` and `smtp.py` beside this module; the runtime builds the
configured ones once from the settings (`build_channel`). A send is bounded in time: every
network call has a timeout, and the whole send (its tries and waits) a `SendDeadline`. It is
retried inside the step for transient failures, then raises `DeliveryFailed` with a reason
that never carries the Slack URL or SMTP password; a try that went out and got no answer
is not retried (`MaybeDelivered`).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
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


class BetweenTries(Protocol):
    """What a send says of its waits between tries (the critical alerts' claims keep it):
    the try before delivered nothing for sure (a try that may have delivered ends the send,
    `MaybeDelivered`), then the next try's start."""

    def failed(self, reason: str) -> None:
        """The try just made was refused (an answer said so) or never reached the server:
        the send waits now before its next."""

    def retrying(self) -> None:
        """The next try starts now; whatever this raises ends the send (raised as is)."""


class Channel(Protocol):
    name: ChannelName

    def send(self, message: Message, between_tries: BetweenTries | None = None) -> None:
        """Deliver or raise DeliveryFailed (`MaybeDelivered` when a try went out without an
        answer); `between_tries` is told of each wait after a try that delivered nothing."""


Sleep = Callable[[float], None]


def wait_between_tries(
    sleep: Sleep, seconds: float, between_tries: BetweenTries | None, reason: str
) -> None:
    """Wait `seconds` before a send's next try, the try before having failed for sure
    (`reason`); `between_tries` hears of the wait: a sender stopped meanwhile sent nothing."""
    if between_tries is None:
        sleep(seconds)
        return
    between_tries.failed(reason)
    sleep(seconds)
    between_tries.retrying()


SEND_DEADLINE_SECONDS = 60.0  # one send in all: its tries, its waits, every network call


class SendDeadline:
    """The time one send may take in all. The per-call timeouts (smtplib's, slack_sdk's)
    never fire on a server that answers a byte at a time (a tarpit's `220-` lines, a body
    trickling in): such a send went on for minutes, holding the notify leader lock and the
    critical alerts of every other channel."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self._clock = seconds, clock
        self._end = clock() + seconds

    def left(self) -> float:
        return max(0.0, self._end - self._clock())

    @property
    def passed(self) -> bool:
        return self.left() <= 0.0

    @property
    def reason(self) -> str:
        return f"no delivery within {self.seconds:g} s (the send's deadline)"

    @contextmanager
    def hanging_up(self) -> Iterator[None]:
        """Run the block with every socket it opens (in this thread) shut down when the
        deadline passes: the read waiting on it ends at once, in this thread, and no
        connection outlives the send. A timer thread does the shutting; it ends with the
        block."""
        _watch_new_sockets()
        opened: list[socket.socket] = []
        _opening.sockets = opened
        timer = threading.Timer(self.left(), _shut_down, [opened])
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            _opening.sockets = None
            timer.cancel()
            timer.join()


_opening = threading.local()  # `sockets`: where the current thread's new sockets go, if any


@cache
def _watch_new_sockets() -> None:
    """An audit hook (once per process): neither smtplib nor slack_sdk lets a caller reach
    the socket it reads from, and a TLS socket exists before its handshake, so this sees
    it even then. The hook only looks at `socket.__new__` in threads inside a send."""
    sys.addaudithook(_record_new_socket)


def _record_new_socket(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.__new__":
        sockets = getattr(_opening, "sockets", None)
        if sockets is not None:
            sockets.append(args[0])


def _shut_down(opened: list[socket.socket]) -> None:
    """Shut down (both ways) every socket still open. The plain socket's method, also for a
    TLS socket: `SSLSocket.shutdown` would drop its TLS state under the reading thread."""
    for sock in list(opened):
        with suppress(OSError):  # closed already, or never connected
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


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
