"""Critical alerts do not wait for the digest: each incident is sent once on every channel,
and once more ("resolved") when it is resolved, however often it recurred in between.

Each message is claimed on each channel before it is sent and marked after (a
`critical_messages` row per alert, phase and channel: `message_store.py`). Of two senders
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
the send waits between its own tries after one that delivered nothing (`critical_send.py`):
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

import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from service.adapters.channels import Channel, Message
from service.config import Settings
from service.db.locks import HeldLock
from service.logs import log_event
from service.models._types import utcnow
from service.models.alerts import AlertStatus
from service.notify.alerts import NOTIFY_STATE
from service.notify.critical_progress import (
    RAISED,
    RESOLVED,
    Attempt,
    attempted,
    log_attempt,
    told_by_progress,
    with_claims,
)
from service.notify.critical_send import MessageSender
from service.notify.leader import ALONE, recording
from service.notify.message_store import close_unsent, told_by_claims
from service.notify.render import AlertView, render_alert
from service.notify.store import critical_alerts_to_notify, record_notification
from service.notify.urls import DashboardLinks

MAX_ATTEMPTS = 8
BATCH = 20


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
    sender = _Pass(engine, settings, lock, clock, uuid.uuid4().hex, channels)
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


@dataclass(frozen=True)
class _Pass(MessageSender):
    """One pass of the job over `channels`: it claims messages as `claimant` (its own token)."""

    channels: Sequence[Channel]

    def close_raised(self, row: Mapping[str, Any]) -> None:
        """An incident resolved before every channel had its "raised" message: none is sent
        now (the incident is over: its failed claims are closed, `close_unsent`); the
        channels that had it, or may have (a claim in flight, unsure, or any with resends:
        a send that went out unanswered before one refused), get the "resolved" one, and
        when none had it there is nothing to follow up."""
        state: dict[str, Any] = dict((row["detail"] or {}).get(NOTIFY_STATE) or {})
        self.lock.check()  # another worker leads now: it closes this
        claims = close_unsent(self.engine, row, RAISED, self.clock())
        raised = with_claims(dict(state.get(RAISED) or {}), claims)
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
        attempt = Attempt.of(progress)
        told = self.told(row, state) if phase == RESOLVED else None
        message = self._message(row, phase)
        for channel in self.channels:
            if attempt.settled(channel.name) or (told is not None and channel.name not in told):
                continue  # had it; or a resolution for a channel never told it was raised
            self.lock.check()  # another worker leads now: it sends this
            self.claim_and_send(row, phase, channel, message, attempt)
        attempts = int(progress.get("attempts", 0)) + int(attempt.tried)
        left = [c for c in self.channels if not attempt.settled(c.name)]
        over = not attempt.errors or not left or attempts >= MAX_ATTEMPTS
        finished = over and not attempt.busy  # a claim in flight: its sender marks it
        state[phase] = attempted(attempt, attempts, finished, now)
        with recording(self.engine, self.lock):  # lost meanwhile: nothing recorded
            record_notification(
                self.engine,
                row,
                resolved=phase == RESOLVED,
                state=state,
                finished_at=now if finished else None,
            )
        log_attempt(row, phase, state[phase], finished, attempt.busy)
        return 1 if finished and not attempt.errors else 0

    def told(self, row: Mapping[str, Any], state: Mapping[str, Any]) -> Collection[str]:
        """The channels the "raised" message went to, or may have: the ones the "resolved"
        one goes to. Its progress says so, and its claims: one whose send went out without
        an answer, refused when sent once more until its attempts ran out, is in no list of
        its progress (its "resolved" message was never sent)."""
        claims = told_by_claims(self.engine, row, RAISED)
        return told_by_progress(state) | claims.sent | claims.maybe

    def _message(self, row: Mapping[str, Any], phase: str) -> Message:
        links = DashboardLinks(self.settings.mfx_public_url)
        examples = self.settings.mfx_message_examples
        view = AlertView.of(row, examples=examples, run_url=links.run)
        return render_alert(view, resolved=phase == RESOLVED, alerts_url=links.alerts())
