"""Email through SMTP: `smtp://user:pass@host:port` (STARTTLS when the server offers it) or
`smtps://user:pass@host:port` (implicit TLS); multipart plain text + HTML.

Every connection has a timeout, and the whole send a deadline (`SendDeadline`: a server
sending its greeting a line at a time never trips the timeout); a temporary failure (4xx
reply, dropped connection, the deadline) is retried with backoff inside the send while the
deadline allows (the caller may hear of each wait after a try the server refused or never
got: `BetweenTries`); once the message went whole (DATA answered 354, the message and its
end sent), a connection dropped or timed out without the server's answer may have left the
message taken: the send ends there (`MaybeDelivered`), never sending it again itself. That
answer is waited for up to the send's deadline. The password never appears in a reason or a
log line.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
import time
from contextlib import closing, suppress
from dataclasses import dataclass
from email.header import Header
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from service.adapters.channels import (
    SEND_DEADLINE_SECONDS,
    BetweenTries,
    ChannelName,
    Message,
    SendDeadline,
    Sleep,
    redact,
    wait_between_tries,
)
from service.config import Settings
from service.errors import DeliveryFailed, MaybeDelivered
from service.logs import log_event

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

TIMEOUT_SECONDS = 15
ATTEMPTS = 3
FIRST_BACKOFF_SECONDS = 2.0


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool
    username: str
    password: str

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        """ValueError (without the password) when `url` is not smtp:// or smtps://."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL must look like smtp://user:pass@host:port or smtps://…")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError("SMTP_URL has a bad port") from exc
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=port or (465 if implicit else 587),
            implicit_tls=implicit,
            username=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
        )


class EmailChannel:
    name = ChannelName.EMAIL

    def __init__(
        self,
        target: SmtpTarget,
        sender: str,
        recipients: list[str],
        *,
        tls_context: ssl.SSLContext | None = None,
        sleep: Sleep = time.sleep,
        timeout: float = TIMEOUT_SECONDS,
        deadline: float = SEND_DEADLINE_SECONDS,
    ) -> None:
        self.target, self.sender, self.recipients = target, sender, recipients
        self._tls = tls_context
        self._sleep, self._timeout, self._deadline = sleep, timeout, deadline

    @classmethod
    def from_settings(
        cls, settings: Settings, *, tls_context: ssl.SSLContext | None = None
    ) -> EmailChannel:
        target = SmtpTarget.parse(settings.smtp_url)
        recipients = [a.strip() for a in settings.digest_email_to.split(",") if a.strip()]
        sender = settings.digest_email_from or f"meterfix@{socket.getfqdn()}"
        return cls(target, sender, recipients, tls_context=tls_context)

    def build(self, message: Message) -> EmailMessage:
        """The email of `message`. Its subject is one line: it may name an object key or a
        file name, which may hold a line break (a header refuses one: the message failed
        on every try and the alert never reached email). It is written as encoded words
        (`encoded_subject`): the only header that carries data."""
        email = EmailMessage()
        email.set_raw("Subject", encoded_subject(one_line(message.subject)))
        email["From"] = self.sender
        email["To"] = ", ".join(self.recipients)
        email["Date"] = formatdate(localtime=False)
        email["Message-ID"] = make_msgid(domain="meterfix")
        email.set_content(message.text)
        email.add_alternative(message.html, subtype="html")
        return email

    def send(self, message: Message, between_tries: BetweenTries | None = None) -> None:
        """Deliver `message`; `between_tries` hears of each wait after a try the server
        refused or that never reached it."""
        email = self.build(message)
        deadline = SendDeadline(self._deadline)
        backoff = FIRST_BACKOFF_SECONDS
        for attempt in range(1, ATTEMPTS + 1):
            try:
                refused = self._deliver(email, deadline)
            except _Unanswered as exc:  # the server may have taken it: not sent again
                said = deadline.reason if deadline.passed else self._reason(exc.cause)[0]
                raise MaybeDelivered(f"email: sent, no answer: {said}") from None
            except (smtplib.SMTPException, OSError) as exc:
                reason, permanent = self._reason(exc)
                if deadline.passed:  # its connection was shut: temporary, tried again later
                    raise DeliveryFailed(f"email: {deadline.reason}") from None
                if permanent or attempt == ATTEMPTS or deadline.left() <= backoff:
                    raise DeliveryFailed(f"email: {reason}", permanent=permanent) from None
                log_event("email.retry", level=logging.WARNING, reason=reason, wait=backoff)
                wait_between_tries(self._sleep, backoff, between_tries, reason)
                backoff *= 2
                continue
            if refused:  # the others have it: sent again, they would have it twice
                raise DeliveryFailed(self._refused(refused), permanent=True, delivered=True)
            return

    def _refused(self, refused: dict[str, tuple[int, bytes]]) -> str:
        """Which recipients the server refused, and why (it took the message for the rest)."""
        named = "; ".join(
            f"{address} ({code} {text.decode('utf-8', 'replace')})"
            for address, (code, text) in sorted(refused.items())
        )
        sent = len(self.recipients) - len(refused)
        return redact(
            f"email: delivered to {sent} of {len(self.recipients)} recipients; refused: {named}",
            [self.target.password],
        )[:1000]

    def _deliver(self, email: EmailMessage, deadline: SendDeadline) -> dict[str, tuple[int, bytes]]:
        """Send `email`; the recipients the server refused (it took it for the others)."""
        with deadline.hanging_up():
            timeout = min(self._timeout, max(deadline.left(), 0.1))
            return self._converse(email, timeout, deadline)

    def _converse(
        self, email: EmailMessage, timeout: float, deadline: SendDeadline
    ) -> dict[str, tuple[int, bytes]]:
        t = self.target
        context = self._tls or ssl.create_default_context()
        smtp: _Smtp | _SmtpSsl
        if t.implicit_tls:
            smtp = _SmtpSsl(t.host, t.port, timeout=timeout, context=context)
        else:
            smtp = _Smtp(t.host, t.port, timeout=timeout)
        smtp.deadline = deadline
        with closing(smtp):
            smtp.ehlo()
            if not t.implicit_tls and smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
            if t.username:
                smtp.login(t.username, t.password)
            try:
                refused = smtp.send_message(email, from_addr=self.sender, to_addrs=self.recipients)
            except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused):
                raise  # the server's answer: it did not take it
            except (smtplib.SMTPException, OSError) as exc:
                if smtp.data_sent:  # the message went whole, no answer: it may have taken it
                    raise _Unanswered(exc) from exc
                raise
            # The message is taken: what QUIT meets says nothing of it. Raised (`with smtp`
            # raised a reply other than 221, a reset connection), the send tried again and
            # the message went twice.
            with suppress(smtplib.SMTPException, OSError):
                smtp.quit()
            return refused

    def _reason(self, exc: Exception) -> tuple[str, bool]:
        secrets = [self.target.password]
        if isinstance(exc, smtplib.SMTPResponseException):
            raw = exc.smtp_error
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
            return redact(f"SMTP {exc.smtp_code} {text}", secrets), 500 <= exc.smtp_code < 600
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            return self._all_refused(exc.recipients)
        return redact(f"{type(exc).__name__}: {exc}", secrets), False

    def _all_refused(self, refused: dict[str, tuple[int, bytes]]) -> tuple[str, bool]:
        """Every recipient refused: temporary when every answer is 4xx (a greylisting
        server's `450 4.2.0 Greylisted` takes the message on a later try), with the
        server's answers (they were dropped, and a greylisted digest was failed for good)."""
        answers = sorted({f"{code} {_text(text)}" for code, text in refused.values()})
        reason = f"every recipient was refused: {'; '.join(answers)}"
        reason = redact(reason, [self.target.password])
        temporary = all(400 <= code < 500 for code, _ in refused.values())
        return reason[:300], not temporary


class _Unanswered(Exception):
    """The connection failed (dropped, timed out) once the message went whole: the server may
    have taken the message without its answer reaching us (`cause`: what failed)."""

    def __init__(self, cause: smtplib.SMTPException | OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Smtp(smtplib.SMTP):
    """smtplib's client that says whether the message went out whole (`data_sent`): DATA
    answered 354, then the message and its end sent. A failure after that, not an answer,
    may come after the server took the message; one before it (a connection dropped at
    DATA, no 354 in time, the message cut while it went) delivered nothing. smtplib's own
    `data` does the quoting and sending; its replies are watched (`getreply`). The answer to
    the message's end is waited for up to the send's deadline (`deadline`), not the per-read
    timeout: RFC 5321 (4.5.3.2.6) has a client wait up to 10 minutes for it, and a server
    slow to answer had the message counted as may have arrived, and sent again."""

    data_sent = False
    deadline: SendDeadline | None = None
    _data = 0  # 1: DATA sent, its answer awaited; 2: 354 had, the message is going

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        self._data = 1
        try:
            return super().data(msg)
        finally:
            self._data = 0

    def getreply(self) -> tuple[int, bytes]:
        if self._data != 2:
            code, text = super().getreply()
            if self._data == 1 and code == 354:
                self._data = 2
            return code, text
        self.data_sent = True  # smtplib sent the message and its end whole: their answer now
        if self.deadline is None or self.sock is None:
            return super().getreply()
        sock = self.sock  # closed by smtplib (None) when the connection drops
        timeout = sock.gettimeout()
        sock.settimeout(max(self.deadline.left(), 0.1))
        try:
            return super().getreply()
        finally:
            with suppress(OSError):
                sock.settimeout(timeout)


class _SmtpSsl(smtplib.SMTP_SSL, _Smtp):
    """`_Smtp` over implicit TLS."""


def _text(raw: bytes | str) -> str:
    return one_line(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)


def encoded_subject(text: str) -> str:
    """`text` as RFC 2047 encoded words (UTF-8), folded, every character of it encoded, to be
    stored as it is (`set_raw`). Given as a value, the email package decodes the encoded
    words in it and refolds what they hold: a key holding `=?utf-8?q?=0D=0AReply-To:…?=`
    wrote a CR LF, an attacker's Reply-To header and body into the email (Python 3.11.7);
    an encoded word that was text (refolded as it is) would be decoded by the reader's mail
    client. Encoded, `=?` in data is text, and the subject read is `text`."""
    return Header(text, "utf-8", header_name="Subject").encode(linesep="\n")


def one_line(text: str) -> str:
    """`text` with its line breaks and other control characters as spaces."""
    return _CONTROL.sub(" ", text)


_CONTROL = re.compile("[\x00-\x1f\x7f\u0085\u2028\u2029]")
