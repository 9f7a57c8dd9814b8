"""Sending digests: one `digest_runs` row per (channel, window) makes each window sent once.

A window is claimed by inserting its row (`sending`, with a lease); the unique (channel,
window_start) means only one process wins. A finished row of another cadence that starts at
the same time (`DIGEST_EVERY` changed from 1h to 1d: midnight's hourly row) is taken over.
The row then ends `sent`, `empty` (nothing happened: nothing sent) or `failed` with its
reason and the time of its next try (backoff). A send that went out and had no answer (a
Slack POST or an email taken whole, the connection then dropped or timed out: the senders'
`MaybeDelivered`) may have arrived: its window is sent once more after its backoff (the row's
summary counts such sends, `unanswered`), and one more without an answer, or the attempts
running out after it, ends it `unsure`, never sent again, with a warning alert saying it may
have arrived: a digest reaches a channel twice at most (a server taking every send and never
answering had it on each of 8 attempts, and the alert said it could not be sent).
A claim whose lease ran out (the sender died mid-send) is taken again, so a crash repeats at
most that one message and never loses a window. Windows missed while no worker ran are caught
up, oldest first (at most CATCH_UP_WINDOWS of them). Callers hold the notify leader lock,
checked before each claim and send: a pass whose lock was lost (its connection dropped,
another worker leads) stops with `LockLost`, sending nothing more, and hands back the windows
it claimed and did not send (the next leader's pass sends them, not waiting for the lease).
The record of a window sent is not fenced: the claim makes it this sender's alone, and not
recorded it would be sent again after the lease.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from service.adapters.channels import Channel, Message, redact, settings_secrets
from service.config import Settings
from service.db.locks import HeldLock, LockLost
from service.errors import DeliveryFailed, MaybeDelivered
from service.logs import log_event
from service.models._types import utcnow
from service.models.alerts import DigestStatus
from service.notify import digest_store as store
from service.notify.alerts import raise_alert
from service.notify.content import collect_digest
from service.notify.digest_lines import Digest
from service.notify.leader import ALONE
from service.notify.render import render_digest
from service.notify.shown import counted
from service.notify.windows import DigestSchedule, Window

MAX_ATTEMPTS = 8
# A send that went out without an answer may have arrived: the window is sent once more at
# most (it may arrive twice: a digest that may never have arrived is worse), then unsure.
MAX_RESENDS = 1
FIRST_RETRY_SECONDS = 30.0
MAX_RETRY_SECONDS = 3600.0
LEASE = timedelta(minutes=5)  # far longer than one bounded send (timeouts, retries)
CATCH_UP_WINDOWS = 24


@dataclass(frozen=True)
class DigestOutcome:
    channel: str
    window: Window
    status: str
    reason: str = ""


class DigestSender:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        channels: Sequence[Channel],
        *,
        instance: str,
        lease: timedelta = LEASE,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine, self.settings, self.channels = engine, settings, list(channels)
        self.instance, self.lease, self.clock = instance, lease, clock
        self.schedule = DigestSchedule(settings.digest_every, settings.digest_tz)

    # --- the scheduled pass ----------------------------------------------------------------

    def tick(self, lock: HeldLock = ALONE) -> list[DigestOutcome]:
        """Send every due window on every channel, and retry the due failures, leading
        (`lock`: `LockLost` once it is lost)."""
        now = self.clock()
        outcomes: list[DigestOutcome] = []
        for channel in self.channels:
            for window in self._due_windows(channel.name, now):
                lock.check()  # a pass no longer leading claims nothing more
                if self._claim(channel.name, window, now, over_other_window=True):
                    outcomes += self._deliver_claimed(channel, [(window, 1)], lock)
            lock.check()
            outcomes += self._deliver_claimed(channel, self._due_retries(channel.name, now), lock)
        return outcomes

    def _deliver_claimed(
        self, channel: Channel, claimed: list[tuple[Window, int]], lock: HeldLock
    ) -> list[DigestOutcome]:
        """Deliver the windows claimed; the lead lost, hand back the ones not sent."""
        outcomes = []
        for index, (window, attempts) in enumerate(claimed):
            try:
                outcomes.append(self._deliver(channel, window, attempts, lock=lock))
            except LockLost:
                for left, tried in claimed[index:]:
                    self._hand_back(channel.name, left, tried)
                raise
        return outcomes

    def _hand_back(self, channel: str, window: Window, attempts: int) -> None:
        """Our claim of a window not sent, due again at once with its attempts as they were
        (the next pass re-claims it, counting one): another worker leads the next pass."""
        self._update(channel, window, {"next_attempt_at": self.clock(), "attempts": attempts - 1})

    def _due_windows(self, channel: str, now: datetime) -> list[Window]:
        for start, end in store.recorded_windows(self.engine, channel, 50):
            # manual runs (`meterfix digest`) are off the grid
            if self.schedule.is_boundary(end) and self.schedule.is_boundary(start):
                return self.schedule.windows_after(end, now, CATCH_UP_WINDOWS)
        return [self.schedule.latest_window(now)]

    def _claim(
        self, channel: str, window: Window, now: datetime, *, over_other_window: bool = False
    ) -> bool:
        """Insert the window's row; on the grid, a finished row of the cadence before (same
        start, another end) is taken over: its window was sent, this one not yet. A manual
        window (`send_now`) never takes over a scheduled one: the grid would send it again."""
        row = self._new_row(channel, window, now)
        if store.claim_window(self.engine, row):
            return True
        return over_other_window and store.take_over_window(self.engine, row)

    def _new_row(self, channel: str, window: Window, now: datetime) -> dict[str, Any]:
        return {
            "channel": channel,
            "window_start": window.start.astimezone(UTC),
            "window_end": window.end.astimezone(UTC),
            "status": DigestStatus.SENDING.value,
            "attempts": 1,
            "next_attempt_at": now + self.lease,
            "claimed_by": self.instance,
            "summary": {},
            "created_at": now,
        }

    def _due_retries(self, channel: str, now: datetime) -> list[tuple[Window, int]]:
        """Failed rows whose next try is due, and claims whose lease ran out, re-claimed."""
        taken = store.take_due_windows(
            self.engine, channel, now, instance=self.instance, lease_until=now + self.lease
        )
        return [(Window(start, end), attempts) for start, end, attempts in taken]

    # --- one window on one channel ---------------------------------------------------------

    def collect(self, window: Window) -> Digest:
        s = self.settings
        return collect_digest(
            self.engine,
            window,
            public_url=s.mfx_public_url,
            examples=s.mfx_message_examples,
            tz=s.digest_tz,
        )

    def _deliver(
        self,
        channel: Channel,
        window: Window,
        attempts: int,
        *,
        retry: bool = True,
        lock: HeldLock = ALONE,
    ) -> DigestOutcome:
        try:
            digest = self.collect(window)
            if digest.empty:
                self._finish(channel.name, window, DigestStatus.EMPTY, {})
                return DigestOutcome(channel.name, window, DigestStatus.EMPTY)
            message = render_digest(digest, now=self.clock())
            lock.check()  # another worker leads now: it sends this window
            channel.send(message)
        except LockLost:
            raise  # not the window's failure: the caller hands it back
        except MaybeDelivered as exc:
            return self._unanswered(channel.name, window, attempts, exc.reason, retry)
        except DeliveryFailed as exc:
            return self._failed(channel.name, window, attempts, exc.reason, exc.permanent, retry)
        except Exception as exc:  # loop edge: a digest failure never stops the worker
            reason = redact(f"{type(exc).__name__}: {exc}", settings_secrets(self.settings))
            return self._failed(channel.name, window, attempts, reason, False, retry)
        summary = _summary(digest, message)
        if unanswered := store.unanswered_sends(self.engine, channel.name, _bounds(window)):
            summary[store.UNANSWERED] = unanswered  # sent before without an answer: maybe twice
        self._finish(channel.name, window, DigestStatus.SENT, summary)
        log_event("digest.sent", channel=channel.name, window_start=window.start, attempt=attempts)
        return DigestOutcome(channel.name, window, DigestStatus.SENT)

    def _finish(
        self, channel: str, window: Window, status: DigestStatus, summary: dict[str, Any]
    ) -> None:
        now = self.clock()
        values: dict[str, Any] = {"status": status.value, "summary": summary, "last_error": None}
        values |= {"next_attempt_at": None, "sent_at": now if status is DigestStatus.SENT else None}
        self._update(channel, window, values)

    def _failed(
        self, channel: str, window: Window, attempts: int, reason: str, permanent: bool, retry: bool
    ) -> DigestOutcome:
        give_up = permanent or not retry or attempts >= MAX_ATTEMPTS
        if give_up and (sends := store.unanswered_sends(self.engine, channel, _bounds(window))):
            return self._unsure(channel, window, attempts, reason, sends, retry)
        next_at = None if give_up else self.clock() + timedelta(seconds=retry_delay(attempts))
        self._update(
            channel,
            window,
            {"status": DigestStatus.FAILED.value, "last_error": reason, "next_attempt_at": next_at},
        )
        _logged(
            "digest.failed",
            logging.ERROR,
            channel,
            window,
            attempts,
            reason,
            next_attempt_at=next_at,
        )
        if give_up and retry:
            self._alert_failed(channel, window, attempts, reason)
        return DigestOutcome(channel, window, DigestStatus.FAILED, reason)

    def _unanswered(
        self, channel: str, window: Window, attempts: int, reason: str, retry: bool
    ) -> DigestOutcome:
        """The send went out without an answer: the digest may have arrived. Tried again
        after the backoff, once (`MAX_RESENDS`); sent so before, or with no try left, the
        window is unsure."""
        sends = store.unanswered_sends(self.engine, channel, _bounds(window)) + 1
        if not retry or sends > MAX_RESENDS or attempts >= MAX_ATTEMPTS:
            return self._unsure(channel, window, attempts, reason, sends, retry)
        next_at = self.clock() + timedelta(seconds=retry_delay(attempts))
        said = f"{reason} (it may have arrived: sent once more)"
        values = {"status": DigestStatus.FAILED.value, "last_error": said}
        self._update(
            channel,
            window,
            values | {"next_attempt_at": next_at, "summary": {store.UNANSWERED: sends}},
        )
        _logged(
            "digest.unanswered",
            logging.WARNING,
            channel,
            window,
            attempts,
            said,
            next_attempt_at=next_at,
        )
        return DigestOutcome(channel, window, DigestStatus.FAILED, said)

    def _unsure(
        self, channel: str, window: Window, attempts: int, reason: str, sends: int, retry: bool
    ) -> DigestOutcome:
        """The window may have arrived (`sends` of it had no answer) and is not sent again:
        `unsure`, with a warning alert saying so (`meterfix digest`: its outcome a failure
        whose reason says so, the command reporting it)."""
        said = (
            f"it may have arrived ({counted(sends, 'send')} without an answer), "
            f"not sent again: {reason}"
        )
        values: dict[str, Any] = {"status": DigestStatus.UNSURE.value, "last_error": said[:1000]}
        values |= {"next_attempt_at": None, "summary": {store.UNANSWERED: sends}}
        self._update(channel, window, values)
        _logged("digest.unsure", logging.ERROR, channel, window, attempts, said)
        if not retry:
            return DigestOutcome(channel, window, DigestStatus.FAILED, said)
        self._raise_warning(
            channel,
            window,
            subject="may have arrived: sent without an answer, not sent again",
            message=f"after {counted(attempts, 'attempt')}: {said}",
        )
        return DigestOutcome(channel, window, DigestStatus.UNSURE, said)

    def _alert_failed(self, channel: str, window: Window, attempts: int, reason: str) -> None:
        self._raise_warning(
            channel,
            window,
            subject="could not be sent",
            message=f"after {attempts} attempts: {reason}",
        )

    def _raise_warning(self, channel: str, window: Window, *, subject: str, message: str) -> None:
        """One alert per window: by its start and end, since a daily window starts where
        the hourly one of midnight did (`DIGEST_EVERY` changed) and is another digest."""
        start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
        raise_alert(
            self.engine,
            key=f"digest.failed:{channel}:{start.isoformat()}/{end.isoformat()}",
            severity="warning",
            kind="digest.failed",
            subject=f"{channel} digest for {_span(start, end)} {subject}",
            message=message,
            detail={
                "channel": channel,
                "window_start": start.isoformat(),
                "window_end": end.isoformat(),
            },
        )

    def _update(self, channel: str, window: Window, values: dict[str, Any]) -> None:
        """Only our own claim is finished (a row taken over by another sender is theirs)."""
        store.update_own_window(self.engine, channel, _bounds(window), self.instance, values)

    # --- `meterfix digest` -----------------------------------------------------------------

    def send_now(self, window: Window) -> list[DigestOutcome]:
        """Send `window` on every channel at once (no scheduled retry: the caller reports)."""
        now = self.clock()
        outcomes = []
        for channel in self.channels:
            if not self._claim(channel.name, window, now):
                reason = "this window is already recorded for this channel"
                outcomes.append(DigestOutcome(channel.name, window, DigestStatus.FAILED, reason))
                continue
            outcomes.append(self._deliver(channel, window, attempts=1, retry=False))
        return outcomes


def retry_delay(attempts: int) -> float:
    """30 s after the first failure, doubling up to an hour, with jitter."""
    ceiling = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0))
    return float(ceiling * random.uniform(0.5, 1.0))


def _bounds(window: Window) -> tuple[datetime, datetime]:
    return window.start.astimezone(UTC), window.end.astimezone(UTC)


def _span(start: datetime, end: datetime) -> str:
    """A window in UTC (a retried window is read back from the database in UTC)."""
    until = f"{end:%H:%M}" if start.date() == end.date() else f"{end:%Y-%m-%d %H:%M}"
    return f"{start:%Y-%m-%d %H:%M} to {until} UTC"


def _summary(digest: Digest, message: Message) -> dict[str, Any]:
    """Counts only (no row contents): what the dashboard may show about a sent digest."""
    return {
        "totals": asdict(digest.totals),  # new input
        "reruns": asdict(digest.reruns),
        "waiting_in_quarantine": digest.waiting,
        "codes": len(digest.codes),
        "open_critical_alerts": digest.alerts_total,
        "warning_alerts": digest.warnings_total,
        "dead_letters": digest.dead_total,
        "error_reports_left": digest.reports_total.reports,
        "subject": message.subject,
    }


def _logged(
    event: str, level: int, channel: str, window: Window, attempts: int, reason: str, **more: Any
) -> None:
    """Log what became of a window's send (`more`: when it is tried next)."""
    log_event(
        event,
        level=level,
        channel=channel,
        window_start=window.start,
        window_end=window.end,
        attempt=attempts,
        reason=reason,
        **more,
    )
