"""Critical alerts do not wait for the digest: each incident is sent once on every channel,
and once more ("resolved") when it is resolved, however often it recurred in between.

`notified_at` / `resolved_notified_at` say the message went out. Which channels already
have it is kept in the alert's `detail["notify"]`, so a channel that fails is retried with
backoff without sending again on the channels that succeeded. After MAX_ATTEMPTS the
message is given up (recorded with its reason). Callers hold the notify leader lock: it is
checked before each send, and fences the transaction recording it (`leader.recording`), so a
pass whose lock was lost (its connection dropped, another worker leads) stops with `LockLost`,
sending and recording nothing more; the next leader sends what is due. A message whose
send the loss interrupted (sent on one channel of two, or sent and not yet recorded) may
go again, as after a crash mid-send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from service.adapters.channels import Channel, Message, redact, settings_secrets
from service.config import Settings
from service.db.locks import HeldLock
from service.errors import DeliveryFailed
from service.logs import log_event
from service.models._types import table_of, utcnow
from service.models.alerts import Alert, AlertStatus
from service.notify.alerts import NOTIFY_STATE
from service.notify.digests import retry_delay
from service.notify.leader import ALONE, recording
from service.notify.render import AlertView, render_alert
from service.notify.store import critical_alerts_to_notify, record_notification
from service.notify.urls import DashboardLinks

ALERTS = table_of(Alert)
MAX_ATTEMPTS = 8
BATCH = 20
RAISED, RESOLVED = "raised", "resolved"


def send_critical_alerts(
    engine: Engine,
    settings: Settings,
    channels: Sequence[Channel],
    *,
    clock: Callable[[], datetime] = utcnow,
    lock: HeldLock = ALONE,
) -> int:
    """Send the due "raised" and "resolved" messages; returns how many alerts went out.
    `LockLost` when the lead (`lock`) is lost: before a send, or recording one."""
    if not channels:
        return 0
    links = DashboardLinks(settings.mfx_public_url)
    sent = 0
    secrets = settings_secrets(settings)
    for phase in (RAISED, RESOLVED):
        for row in _due(engine, phase):
            if phase == RAISED and row["status"] == AlertStatus.RESOLVED:
                _close_raised(engine, row, clock(), lock)
                continue
            view = AlertView.of(row, examples=settings.mfx_message_examples, run_url=links.run)
            sent += _send(engine, row, phase, view, channels, links, clock(), secrets, lock)
    return sent


def _due(engine: Engine, phase: str) -> Iterator[Mapping[str, Any]]:
    """Every alert whose `phase` message is not sent, a page at a time (the ones backing off
    are skipped by `_send`: twenty of them held every newer alert back, a page being all
    that was read)."""
    after = 0
    while page := critical_alerts_to_notify(
        engine, resolved=phase == RESOLVED, limit=BATCH, after=after
    ):
        yield from page
        after = int(page[-1]["id"])


def _close_raised(engine: Engine, row: Mapping[str, Any], now: datetime, lock: HeldLock) -> None:
    """An incident resolved before every channel had its "raised" message: none is sent now
    (the incident is over); the channels that had it get the "resolved" one, and when none
    had it there is nothing to follow up."""
    state: dict[str, Any] = dict((row["detail"] or {}).get(NOTIFY_STATE) or {})
    told = bool(dict(state.get(RAISED) or {}).get("channels"))
    with recording(engine, lock):
        record_notification(
            engine, row, resolved=False, state=state, finished_at=now, close_resolved=not told
        )
    log_event("alert.notify_closed", key=row["alert_key"], phase=RAISED, resolved_follows=told)


def _send(
    engine: Engine,
    row: Mapping[str, Any],
    phase: str,
    view: AlertView,
    channels: Sequence[Channel],
    links: DashboardLinks,
    now: datetime,
    secrets: Sequence[str],
    lock: HeldLock,
) -> int:
    detail = dict(row["detail"] or {})
    state: dict[str, Any] = dict(detail.get(NOTIFY_STATE) or {})
    progress: dict[str, Any] = dict(state.get(phase) or {})
    if progress.get("next_at") and str(progress["next_at"]) > now.isoformat():
        return 0  # backing off after a failure
    done = set(progress.get("channels", []))
    given_up = set(progress.get("given_up", []))  # refused for good: not tried again
    told = state.get(RAISED, {}).get("channels") if phase == RESOLVED else None
    message = render_alert(view, resolved=phase == RESOLVED, alerts_url=links.alerts())
    errors = _deliver(message, channels, done, given_up, told, secrets, lock)
    attempts = int(progress.get("attempts", 0)) + 1
    left = [c for c in channels if c.name not in done | given_up]
    finished = not errors or not left or attempts >= MAX_ATTEMPTS
    progress = _attempted(done, given_up, errors, attempts, finished, now)
    state[phase] = progress
    with recording(engine, lock):  # lost meanwhile: nothing recorded
        _record(engine, row, phase, state, now if finished else None)
    _log(row, phase, progress, finished)
    return 1 if not errors else 0


def _deliver(
    message: Message,
    channels: Sequence[Channel],
    done: set[str],
    given_up: set[str],
    told: Collection[str] | None,
    secrets: Sequence[str],
    lock: HeldLock,
) -> list[str]:
    """Send `message` on every channel still to have it (`told`: only those), adding to `done`
    and `given_up` in place; the reasons of this attempt's failures. `LockLost` (not a
    channel's failure) when the lead is lost before a send."""
    errors: list[str] = []
    for channel in channels:
        if channel.name in done | given_up or (told is not None and channel.name not in told):
            continue  # had it; or a resolution for a channel never told it was raised
        lock.check()  # another worker leads now: it sends this
        try:
            channel.send(message)
            done.add(channel.name)
        except DeliveryFailed as exc:
            errors.append(exc.reason)
            if exc.delivered:  # some recipients have it: sent again, they would twice
                done.add(channel.name)
            elif exc.permanent:
                given_up.add(channel.name)
        except Exception as exc:  # loop edge: one alert's failure never stops the job
            errors.append(redact(f"{type(exc).__name__}: {exc}", secrets)[:500])
    return errors


def _attempted(
    done: set[str],
    given_up: set[str],
    errors: Sequence[str],
    attempts: int,
    finished: bool,
    now: datetime,
) -> dict[str, Any]:
    """A phase's notify progress after an attempt: unless `finished`, a failed one is retried
    after a backoff."""
    progress: dict[str, Any] = {"channels": sorted(done), "attempts": attempts}
    if given_up:
        progress["given_up"] = sorted(given_up)
    if errors:
        progress["error"] = "; ".join(errors)[:1000]
        if not finished:
            progress["next_at"] = (now + timedelta(seconds=retry_delay(attempts))).isoformat()
    return progress


def _record(
    engine: Engine,
    row: Mapping[str, Any],
    phase: str,
    state: dict[str, Any],
    finished_at: datetime | None,
) -> None:
    resolved = phase == RESOLVED
    record_notification(engine, row, resolved=resolved, state=state, finished_at=finished_at)


def _log(row: Mapping[str, Any], phase: str, progress: Mapping[str, Any], finished: bool) -> None:
    if "error" not in progress:
        log_event(
            "alert.notified", key=row["alert_key"], phase=phase, channels=progress["channels"]
        )
        return
    log_event(
        "alert.notify_gave_up" if finished else "alert.notify_failed",
        level=logging.ERROR,
        key=row["alert_key"],
        phase=phase,
        attempt=progress["attempts"],
        reason=progress["error"],
    )
