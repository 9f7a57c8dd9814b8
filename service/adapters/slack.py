"""Slack through an incoming webhook (`slack_sdk`'s WebhookClient) with Block Kit.

A 429 waits for its `Retry-After` (up to a bound, so a send never stalls the worker) and a
5xx or a connection never made is retried with backoff; anything else is a permanent
failure. A refusal is its status line: one whose body is cut is that status's answer. A try
that went out and got no answer (the connection dropped or timed out after the request went,
before a status line; a 2xx one's body cut; a gateway's 502 or 504) may have been posted: the
send ends there, `MaybeDelivered`, never posting it again itself. The caller may hear of each
wait after a try Slack refused or never got (`BetweenTries`). A message of several parts
(over 50 blocks) whose later part fails after the first was posted has arrived in part: the
send ends `MaybeDelivered` (sent once more at most), or, refused for good, delivered.
The whole send (every part, try and wait) has a deadline (`SendDeadline`): an answer
trickling in a byte at a time never trips the per-read timeout; at the deadline its
connection is shut and the send fails as temporary (the digest tries again later).
The webhook URL is a secret: it never appears in a reason or a log line.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.error import HTTPError, URLError

from slack_sdk.webhook import WebhookClient, WebhookResponse

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
from service.errors import DeliveryFailed, MaybeDelivered
from service.logs import log_event

TIMEOUT_SECONDS = 10
ATTEMPTS = 4  # per Slack message, inside one send
FIRST_BACKOFF_SECONDS = 1.0
MAX_RETRY_AFTER_SECONDS = 30.0  # a longer wait fails the send; the digest retries later
# A gateway's answer that it passed the request on and had no answer from behind it (502:
# the upstream connection failed or dropped; 504: it timed out): Slack may have posted it.
GATEWAY_TIMED_OUT = (502, 504)


class SlackChannel:
    name = ChannelName.SLACK

    def __init__(
        self,
        url: str,
        *,
        sleep: Sleep = time.sleep,
        timeout: int = TIMEOUT_SECONDS,
        deadline: float = SEND_DEADLINE_SECONDS,
    ):
        self._url = url
        self._sleep, self._deadline = sleep, deadline
        # Its own silent logger: slack_sdk logs the URL (a secret) at debug level.
        quiet = logging.getLogger("meterfix.slack_sdk")
        quiet.setLevel(logging.CRITICAL)
        self._client = WebhookClient(url, timeout=timeout, logger=quiet, retry_handlers=[])

    def send(self, message: Message, between_tries: BetweenTries | None = None) -> None:
        """Post every part; `between_tries` hears of the waits after a refused first part
        (a later part's: the first arrived)."""
        deadline = SendDeadline(self._deadline)
        parts = message.slack or [{"text": message.text[:3000]}]
        for part, payload in enumerate(parts):
            try:
                self._post(payload, part, deadline, between_tries if part == 0 else None)
            except MaybeDelivered:
                raise
            except DeliveryFailed as exc:
                if part == 0:
                    raise
                raise _after_posted(exc, part, len(parts)) from None

    def _post(
        self,
        payload: dict[str, Any],
        part: int,
        deadline: SendDeadline,
        between_tries: BetweenTries | None,
    ) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        reason = ""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with deadline.hanging_up():
                    response: WebhookResponse | None = self._client.send_dict(payload)
            except Exception as exc:  # network edge: DNS, refused, timeout, TLS, the deadline
                response = _answer_cut(exc)  # its status line came, its body cut: an answer
                if response is None:
                    wait, reason = self._unanswered(exc, backoff, deadline)
            if response is not None:
                if 200 <= response.status_code < 300:
                    return
                reason = f"HTTP {response.status_code}: {redact(str(response.body), [self._url])}"
                if response.status_code in GATEWAY_TIMED_OUT:  # a proxy's: Slack may have it
                    raise MaybeDelivered(f"slack: sent, no answer from Slack: {reason}"[:500])
                wait = self._wait_for(response, backoff)  # Slack said it did not post it
            if attempt == ATTEMPTS or wait >= deadline.left():
                break  # no time left to wait: tried again later
            log_event("slack.retry", level=logging.WARNING, part=part, reason=reason, wait=wait)
            wait_between_tries(self._sleep, wait, between_tries, reason)
            backoff *= 2
        raise DeliveryFailed(f"slack: {reason[:500]}")

    def _unanswered(
        self, exc: Exception, backoff: float, deadline: SendDeadline
    ) -> tuple[float, str]:
        """A try that had no answer: the wait before the next and its reason when it never
        went out, else `MaybeDelivered`."""
        reason = redact(f"{type(exc).__name__}: {exc}", [self._url])
        # urllib's URLError: the request never went out whole (refused, DNS, TLS);
        # anything else came after it went (no answer): Slack may have posted it
        if not isinstance(exc, URLError):
            said = deadline.reason if deadline.passed else reason
            raise MaybeDelivered(f"slack: sent, no answer: {said}"[:500]) from None
        if deadline.passed:
            raise DeliveryFailed(f"slack: {deadline.reason}") from None
        return backoff, reason

    def _wait_for(self, response: WebhookResponse, backoff: float) -> float:
        status = response.status_code
        if status == 429:
            wait = _retry_after(response.headers, default=backoff)
            if wait > MAX_RETRY_AFTER_SECONDS:
                raise DeliveryFailed(f"slack: rate limited for {wait:.0f} s (HTTP 429)")
            return wait
        if status >= 500:
            return backoff
        body = redact(str(response.body), [self._url])[:200]
        raise DeliveryFailed(f"slack: HTTP {status}: {body}", permanent=True)


def _after_posted(failed: DeliveryFailed, part: int, parts: int) -> DeliveryFailed:
    """A part not posted after the ones before it were: the message arrived in part. Sent
    again, its first parts would be posted again (a digest's window sent again at each of its
    backoffs posted its first part 8 times): a temporary failure is a message that may have
    arrived (sent once more at most), a permanent one a message some have."""
    said = f"slack: part {part + 1} of {parts} not posted, those before it were: {failed.reason}"
    if failed.permanent:
        return DeliveryFailed(said[:500], permanent=True, delivered=True)
    return MaybeDelivered(said[:500], delivered=True)


def _answer_cut(exc: BaseException) -> WebhookResponse | None:
    """The answer Slack gave to a try whose answer's body could not be read whole (cut mid-
    read, timed out): its status line came, so it is that answer, not a try unanswered
    (a 503 cut so, raised by slack_sdk from its HTTPError branch, was taken for a post that
    may have arrived). Such an answer (not 2xx) is urllib's HTTPError, in what `exc` was
    raised from. None: no answer, or a 2xx one cut (urlopen returned, its body then cut: as
    before, counted as a try that may have arrived, `MaybeDelivered`)."""
    seen: BaseException | None = exc
    for _ in range(8):  # an exception's chain, as far as it may go here
        if seen is None:
            break
        if isinstance(seen, HTTPError):
            headers = dict(seen.headers.items()) if seen.headers is not None else {}
            body = f"(its body cut: {type(exc).__name__})"
            return WebhookResponse(url="", status_code=seen.code, body=body, headers=headers)
        seen = seen.__cause__ or seen.__context__
    return None


def _retry_after(headers: dict[str, Any], *, default: float) -> float:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                return default
    return default
