"""A critical message's progress, as the alert's `detail["notify"]` keeps it for each phase
("raised", "resolved"): which channels have the message, refused it for good or may have it,
the attempts, the last error and the next try. `critical.py` reads it before a pass at the
message and writes it after; nothing here touches the database or a channel.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from service.logs import log_event
from service.models.alerts import MessageStatus
from service.notify.digests import retry_delay
from service.notify.message_store import Told

RAISED, RESOLVED = "raised", "resolved"


@dataclass
class Attempt:
    """One pass at one message: the channels that have it (`done`), refused it for good, may
    have it (`unsure`), or are another sender's (`busy`: its claim is in flight)."""

    done: set[str]
    given_up: set[str]
    unsure: set[str]
    busy: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    tried: bool = False  # a send was made (or failed): an attempt counted

    @classmethod
    def of(cls, progress: Mapping[str, Any]) -> Attempt:
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


def told_by_progress(state: Mapping[str, Any]) -> set[str]:
    """The channels the "raised" message went to, or may have (unsure), by its progress."""
    raised = dict(state.get(RAISED) or {})
    return set(raised.get("channels", [])) | set(raised.get("unsure", []))


def with_claims(progress: dict[str, Any], told: Told) -> dict[str, Any]:
    """The recorded progress with what the claims say: a channel marked sent has it, one in
    flight, unsure or sent again may have it."""
    done = set(progress.get("channels", [])) | told.sent
    unsure = set(progress.get("unsure", [])) | (told.maybe - done)
    return {**progress, "channels": sorted(done)} | ({"unsure": sorted(unsure)} if unsure else {})


def attempted(attempt: Attempt, attempts: int, finished: bool, now: datetime) -> dict[str, Any]:
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


def log_attempt(
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
