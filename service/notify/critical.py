"""Critical alerts do not wait for the digest: each incident is sent once on every channel,
and once more ("resolved") when it is resolved, however often it recurred in between.

Each message is claimed on each channel before it is sent and marked after (a
`critical_messages` row per alert, phase and channel: `store.claim_message`). Of two senders
(a leader and the next, a moment apart) only one sends it; a sender stopped between channels
(killed, its lead lost) leaves the channels it sent marked, and the next pass sends only the
others. A sender stopped after a send and before marking it (SIGKILL, a crash) leaves its
claim `sending`: nobody sends that message on that channel while the claim is younger than
a send may last (`STALE_CLAIM`, the send's deadline and a margin); once older, the next pass
takes it over and sends it once more (logged `alert.notify_resent`: it may arrive twice, which
is better than a critical alert that never arrived, as when the SMTP server had not even
greeted), and a claim left so again is marked `unsure` and never sent again (said in
`detail["notify"]`, logged `alert.notify_unsure`; the alert stays open on the dashboard and in
the digest). A send with a try that went out and got no answer (a connection dropped or timed
out after the request went, a gateway's 502/504: `MaybeDelivered`) ends at once, its claim
`sending` and its send over (`alert.notify_unanswered`): it may have arrived, and counts as a
send cut off: sent once more by the next attempt, after a backoff, and marked `unsure` when
that one has no answer either. So a message reaches a channel twice at most, whatever its
senders and servers do. A send that failed for sure (a Slack 429 or 503, SMTP down, a 4xx) is
marked `failed` and claimed again by the next attempt, after a backoff; so is the claim while
the send waits between its own tries after one that delivered nothing (`_ClaimBetweenTries`):
a sender stopped in that wait is not mid-send. A claim with resends may have arrived whatever
its status: an incident resolved before its "raised" message went everywhere has its
"resolved" message sent to the channels whose claims say it was sent or may have been
(`close_raised`), and its failed claims closed, so that a sender waiting between tries
sends nothing more.

`notified_at` / `resolved_notified_at` say the phase is over (sent, or given up after
MAX_ATTEMPTS with its reason); the alert's `detail["notify"]` keeps its progress: which
channels have it, which refused for good, the attempts and the next one. Callers hold the
notify leader lock: it is checked before each claim, and fences the transaction recording
the progress (`leader.recording`), so a pass whose lock was lost (its connection dropped,
another worker leads) stops with `LockLost`, claiming, sending and recording nothing more;
the next leader sends what is due.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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
from service.models._types import utcnow
from service.models.alerts import AlertStatus, MessageStatus
from service.notify.alerts import NOTIFY_STATE
from service.notify.digests import retry_delay
from service.notify.leader import ALONE, recording
from service.notify.render import AlertView, render_alert
from service.notify.store import (
    MAY_HAVE_ARRIVED,
    Told,
    claim_message,
    close_unsent,
    critical_alerts_to_notify,
    mark_message,
    mark_unanswered,
    record_notification,
    resume_claim,
    told_by_claims,
)
from service.notify.urls import DashboardLinks

MAX_ATTEMPTS = 8
BATCH = 20
RAISED, RESOLVED = "raised", "resolved"
# A claim still `sending` after the longest a send may last (every channel's deadline) and a
# margin (marking it: one short write) was left by a sender that stopped mid-send.
STALE_CLAIM = timedelta(seconds=SEND_DEADLINE_SECONDS + 30)
# Seconds between tries of marking a message sent (or failed) once its send is over.
MARK_RETRIES = (0.5, 2.0)


def send_critical_alerts(
    engine: Engine,
    settings: Settings,
    channels: Sequence[Channel],
    *,
    clock: Callable[[], datetime] = utcnow,
    lock: HeldLock = ALONE,
) -> int:
    """Send the due "raised" and "resolved" messages; returns how many alerts went out.
    `LockLost` when the lead (`lock`) is lost: before a claim, or recording a send."""
    if not channels:
        return 0
    sender = _Pass(engine, settings, channels, lock, clock, uuid.uuid4().hex)
    sent = 0
    for phase in (RAISED, RESOLVED):
        for row in _due(engine, phase):
            if phase == RAISED and row["status"] == AlertStatus.RESOLVED:
                sender.close_raised(row)
                continue
            sent += sender.send(row, phase)
    return sent


def _due(engine: Engine, phase: str) -> Iterator[Mapping[str, Any]]:
    """Every alert whose `phase` message is not sent, a page at a time (the ones backing off
    are skipped by `_Pass.send`: twenty of them held every newer alert back, a page being
    all that was read)."""
    after = 0
    while page := critical_alerts_to_notify(
        engine, resolved=phase == RESOLVED, limit=BATCH, after=after
    ):
        yield from page
        after = int(page[-1]["id"])


@dataclass
class _Attempt:
    """One pass at one message: the channels that have it (`done`), refused it for good, may
    have it (`unsure`), or are another sender's (`busy`: its claim is in flight)."""

    done: set[str]
    given_up: set[str]
    unsure: set[str]
    busy: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    tried: bool = False  # a send was made (or failed): an attempt counted

    @classmethod
    def of(cls, progress: Mapping[str, Any]) -> _Attempt:
        """Where the recorded progress left the message."""
        done, given_up = progress.get("channels", []), progress.get("given_up", [])
        return cls(set(done), set(given_up), set(progress.get("unsure", [])))

    def settled(self, channel: str) -> bool:
        return channel in self.done | self.given_up | self.unsure

    def found(self, channel: str, status: str | None) -> None:
        """Another sender's claim on `channel`, in `status` (None: another incident's)."""
        if status == MessageStatus.SENT:
            self.done.add(channel)
        elif status == MessageStatus.GIVEN_UP:
            self.given_up.add(channel)
        elif status == MessageStatus.UNSURE:
            self.unsure.add(channel)
        else:
            self.busy.add(channel)

    def sent(self, channel: str, status: MessageStatus, error: str | None) -> None:
        """This pass's send on `channel` came to `status`."""
        self.tried = True
        if status is MessageStatus.SENT:
            self.done.add(channel)  # an error too: some recipients refused it
        elif status is MessageStatus.GIVEN_UP:
            self.given_up.add(channel)
        if error is not None:
            self.errors.append(error)


@dataclass(frozen=True)
class _Pass:
    """One pass of the job: it claims messages as `claimant` (its own token)."""

    engine: Engine
    settings: Settings
    channels: Sequence[Channel]
    lock: HeldLock
    clock: Callable[[], datetime]
    claimant: str

    def close_raised(self, row: Mapping[str, Any]) -> None:
        """An incident resolved before every channel had its "raised" message: none is sent
        now (the incident is over: its failed claims are closed, `close_unsent`); the
        channels that had it, or may have (a claim in flight, unsure, or any with resends:
        a send that went out unanswered before one refused), get the "resolved" one, and
        when none had it there is nothing to follow up."""
        state: dict[str, Any] = dict((row["detail"] or {}).get(NOTIFY_STATE) or {})
        self.lock.check()  # another worker leads now: it closes this
        claims = close_unsent(self.engine, row, RAISED, self.clock())
        raised = _with_claims(dict(state.get(RAISED) or {}), claims)
        state[RAISED] = raised
        told = bool(raised.get("channels") or raised.get("unsure"))
        with recording(self.engine, self.lock):
            record_notification(
                self.engine,
                row,
                resolved=False,
                state=state,
                finished_at=self.clock(),
                close_resolved=not told,
            )
        log_event("alert.notify_closed", key=row["alert_key"], phase=RAISED, resolved_follows=told)

    def send(self, row: Mapping[str, Any], phase: str) -> int:
        """Send the alert's `phase` message on every channel still to have it; 1 when it is
        over without an error."""
        now = self.clock()
        state: dict[str, Any] = dict((row["detail"] or {}).get(NOTIFY_STATE) or {})
        progress: dict[str, Any] = dict(state.get(phase) or {})
        if progress.get("next_at") and str(progress["next_at"]) > now.isoformat():
            return 0  # backing off after a failure
        attempt = _Attempt.of(progress)
        told = self.told(row, state) if phase == RESOLVED else None
        message = self._message(row, phase)
        for channel in self.channels:
            if attempt.settled(channel.name) or (told is not None and channel.name not in told):
                continue  # had it; or a resolution for a channel never told it was raised
            self.lock.check()  # another worker leads now: it sends this
            self._claim_and_send(row, phase, channel, message, attempt)
        attempts = int(progress.get("attempts", 0)) + int(attempt.tried)
        left = [c for c in self.channels if not attempt.settled(c.name)]
        over = not attempt.errors or not left or attempts >= MAX_ATTEMPTS
        finished = over and not attempt.busy  # a claim in flight: its sender marks it
        state[phase] = _attempted(attempt, attempts, finished, now)
        with recording(self.engine, self.lock):  # lost meanwhile: nothing recorded
            record_notification(
                self.engine,
                row,
                resolved=phase == RESOLVED,
                state=state,
                finished_at=now if finished else None,
            )
        _log(row, phase, state[phase], finished, attempt.busy)
        return 1 if finished and not attempt.errors else 0

    def told(self, row: Mapping[str, Any], state: Mapping[str, Any]) -> Collection[str]:
        """The channels the "raised" message went to, or may have: the ones the "resolved"
        one goes to. Its progress says so, and its claims: one whose send went out without
        an answer, refused when sent once more until its attempts ran out, is in no list of
        its progress (its "resolved" message was never sent)."""
        claims = told_by_claims(self.engine, row, RAISED)
        return _told(state) | claims.sent | claims.maybe

    def _message(self, row: Mapping[str, Any], phase: str) -> Message:
        links = DashboardLinks(self.settings.mfx_public_url)
        examples = self.settings.mfx_message_examples
        view = AlertView.of(row, examples=examples, run_url=links.run)
        return render_alert(view, resolved=phase == RESOLVED, alerts_url=links.alerts())

    def _claim_and_send(
        self,
        row: Mapping[str, Any],
        phase: str,
        channel: Channel,
        message: Message,
        attempt: _Attempt,
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
        sent once more, or `unsure` when it was already (`store.mark_unanswered`)."""
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

    sender: _Pass
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


def _told(state: Mapping[str, Any]) -> set[str]:
    """The channels the "raised" message went to, or may have (unsure), by its progress."""
    raised = dict(state.get(RAISED) or {})
    return set(raised.get("channels", [])) | set(raised.get("unsure", []))


def _with_claims(progress: dict[str, Any], told: Told) -> dict[str, Any]:
    """The recorded progress with what the claims say: a channel marked sent has it, one in
    flight, unsure or sent again may have it."""
    done = set(progress.get("channels", [])) | told.sent
    unsure = set(progress.get("unsure", [])) | (told.maybe - done)
    return {**progress, "channels": sorted(done)} | ({"unsure": sorted(unsure)} if unsure else {})


def _attempted(attempt: _Attempt, attempts: int, finished: bool, now: datetime) -> dict[str, Any]:
    """A phase's notify progress after an attempt: unless `finished`, a failed one is retried
    after a backoff."""
    progress: dict[str, Any] = {"channels": sorted(attempt.done), "attempts": attempts}
    if attempt.given_up:
        progress["given_up"] = sorted(attempt.given_up)
    if attempt.unsure:
        progress["unsure"] = sorted(attempt.unsure)
    if attempt.errors:
        progress["error"] = "; ".join(attempt.errors)[:1000]
        if not finished:
            progress["next_at"] = (now + timedelta(seconds=retry_delay(attempts))).isoformat()
    return progress


def _log(
    row: Mapping[str, Any],
    phase: str,
    progress: Mapping[str, Any],
    finished: bool,
    busy: Collection[str],
) -> None:
    if "error" not in progress:
        event = "alert.notified" if finished else "alert.notify_in_flight"
        channels, elsewhere = progress["channels"], sorted(busy)
        log_event(event, key=row["alert_key"], phase=phase, channels=channels, in_flight=elsewhere)
        return
    log_event(
        "alert.notify_gave_up" if finished else "alert.notify_failed",
        level=logging.ERROR,
        key=row["alert_key"],
        phase=phase,
        attempt=progress["attempts"],
        reason=progress["error"],
    )
