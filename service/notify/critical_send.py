"""One critical message on one channel: claimed (`message_store.claim_message`), sent with
the channel's tries, and marked how it went. A claim left `sending` longer than a send may
last (`STALE_CLAIM`) is taken over and the message sent once more; a send that went out
without an answer stays `sending`, to be sent once more by the next attempt; while a send
waits between its tries its claim says `failed` (`_ClaimBetweenTries`). `critical.py` runs
a pass over the due alerts with it; the protocol as a whole is told there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from service.adapters.channels import (
    SEND_DEADLINE_SECONDS,
    BetweenTries,
    Channel,
    Message,
    redact,
    settings_secrets,
)
from service.config import Settings
from service.db.locks import HeldLock, LockLost
from service.errors import DeliveryFailed, MaybeDelivered
from service.logs import log_event
from service.models.alerts import MessageStatus
from service.notify.critical_progress import Attempt
from service.notify.message_store import (
    MAY_HAVE_ARRIVED,
    claim_message,
    mark_message,
    mark_unanswered,
    resume_claim,
)

# A claim still `sending` after the longest a send may last (every channel's deadline) and a
# margin (marking it: one short write) was left by a sender that stopped mid-send.
STALE_CLAIM = timedelta(seconds=SEND_DEADLINE_SECONDS + 30)
# Seconds between tries of marking a message sent (or failed) once its send is over.
MARK_RETRIES = (0.5, 2.0)


@dataclass(frozen=True)
class MessageSender:
    """Sends messages on channels under their claims, as `claimant` (a pass's own token),
    while it holds the notify lead (`lock`)."""

    engine: Engine
    settings: Settings
    lock: HeldLock
    clock: Callable[[], datetime]
    claimant: str

    def claim_and_send(
        self,
        row: Mapping[str, Any],
        phase: str,
        channel: Channel,
        message: Message,
        attempt: Attempt,
    ) -> None:
        """Send on `channel` once this pass holds the message's claim there, then mark it;
        a claim another sender holds or finished is only noted. The claim is dated when it is
        made: dated at the pass's start, an email claimed after a 60 s Slack send looked
        abandoned to another sender 30 s into its send, and went twice."""
        name = channel.name
        now = self.clock()
        claim = claim_message(
            self.engine, row, phase, name, self.claimant, now=now, stale_before=now - STALE_CLAIM
        )
        where = {"key": row["alert_key"], "phase": phase, "channel": name}
        if claim.made_unsure:
            reason = "its senders stopped mid-send or had no answer twice: not sent again"
            log_event("alert.notify_unsure", level=logging.ERROR, **where, reason=reason)
        if not claim.ours:
            attempt.found(name, claim.status)
            return
        if claim.resent:
            reason = f"{MAY_HAVE_ARRIVED}: sent once more, it may arrive twice"
            log_event("alert.notify_resent", level=logging.WARNING, **where, reason=reason)
        claimed = _ClaimBetweenTries(self, row, phase, name)
        try:
            status, error = _send_on(channel, message, settings_secrets(self.settings), claimed)
        except _ClaimTaken:  # in a wait between tries: the other sender sends it
            log_event("alert.notify_taken_over", **where)
            attempt.found(name, None)
            return
        for wait in (*MARK_RETRIES, None):  # unmarked, a message sent goes once more
            try:
                if status is MessageStatus.UNSURE:  # went out without an answer
                    status = self.mark_unanswered(row, phase, name, error or "")
                else:
                    self.mark(row, phase, name, status, error)
                break
            except SQLAlchemyError:
                if wait is None:
                    raise
                time.sleep(wait)  # a database blip, SQLite busy
        if status is MessageStatus.UNSURE:
            reason = f"{error}; sent twice without an answer or cut off: not sent again"
            log_event("alert.notify_unsure", level=logging.ERROR, **where, reason=reason)
            attempt.tried = True
            attempt.unsure.add(name)
            return
        if status is MessageStatus.SENDING:
            reason = f"{error}; it may have arrived: sent once more by the next attempt"
            log_event("alert.notify_unanswered", level=logging.WARNING, **where, reason=reason)
        attempt.sent(name, status, error)

    def mark(
        self,
        row: Mapping[str, Any],
        phase: str,
        channel: str,
        status: MessageStatus,
        error: str | None,
    ) -> None:
        """Mark this pass's claim of the message on `channel` (only while it is `sending`)."""
        now = self.clock()
        mark_message(
            self.engine, row, phase, channel, self.claimant, status=status, now=now, error=error
        )

    def mark_unanswered(
        self, row: Mapping[str, Any], phase: str, channel: str, error: str
    ) -> MessageStatus:
        """Mark this pass's claim on `channel` as sent without an answer: `sending`, to be
        sent once more, or `unsure` when it was already (`message_store.mark_unanswered`)."""
        now = self.clock()
        left = mark_unanswered(
            self.engine, row, phase, channel, self.claimant, now=now, error=error
        )
        return MessageStatus.UNSURE if left == MessageStatus.UNSURE else MessageStatus.SENDING


class _ClaimTaken(Exception):
    """Another sender claimed the message while its send waited between tries."""


@dataclass(frozen=True)
class _ClaimBetweenTries:
    """A claimed message's send between its tries (`BetweenTries`): after a try that
    delivered nothing (a 429, a 503, an SMTP 4xx, no connection) its claim says `failed`
    while the send waits, and `sending` again for the next try. Left `sending`, a sender
    stopped in the wait (a worker's grace is shorter than a Retry-After) left a message that
    may have arrived: sent once more, then marked unsure when that one was stopped so too, a
    critical alert that never reached anyone was never sent."""

    sender: MessageSender
    row: Mapping[str, Any]
    phase: str
    channel: str

    def failed(self, reason: str) -> None:
        try:
            self.sender.mark(self.row, self.phase, self.channel, MessageStatus.FAILED, reason)
        except SQLAlchemyError:  # left `sending`: stopped in the wait, it is sent once more
            log_event("alert.notify_wait_unmarked", level=logging.WARNING, channel=self.channel)

    def retrying(self) -> None:
        sender = self.sender
        sender.lock.check()  # lost during the wait: the next leader sends it (LockLost)
        now = sender.clock()
        if not resume_claim(
            sender.engine, self.row, self.phase, self.channel, sender.claimant, now=now
        ):
            raise _ClaimTaken(self.channel)


def _send_on(
    channel: Channel, message: Message, secrets: Sequence[str], between_tries: BetweenTries
) -> tuple[MessageStatus, str | None]:
    """Send `message` on `channel`: how it went (sent, failed, refused for good, or unsure: it
    went out without an answer), and the reason of a failure; `_ClaimTaken` when another
    sender claimed it between tries, `LockLost` when the lead was lost then."""
    try:
        channel.send(message, between_tries)
    except (_ClaimTaken, LockLost):
        raise
    except MaybeDelivered as exc:
        return MessageStatus.UNSURE, exc.reason
    except DeliveryFailed as exc:
        if exc.delivered:  # some recipients have it: sent again, they would twice
            return MessageStatus.SENT, exc.reason
        return MessageStatus.GIVEN_UP if exc.permanent else MessageStatus.FAILED, exc.reason
    except Exception as exc:  # loop edge: one alert's failure never stops the job
        return MessageStatus.FAILED, redact(f"{type(exc).__name__}: {exc}", secrets)[:500]
    return MessageStatus.SENT, None
