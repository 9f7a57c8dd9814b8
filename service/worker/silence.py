"""Heartbeat silence: a critical alert when no worker (or poller, when MFX_POLLER is on or
index) has beaten for MFX_HEARTBEAT_SILENCE seconds, resolved when heartbeats resume.

A dead worker cannot report itself, so whichever process notices raises it: every `meterfix
worker` (`start_silence_watch`, beside its scheduled jobs), and the web's health endpoints. It
is cheap (two small reads) and writes only when the state changes, so it may run on every
health request. A role that never beat is not alerted on (nothing was started yet). The
heartbeats are the worker room's; the alert goes through `service.notify.alerts`.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import Engine

from service.adapters.channels import redact, settings_secrets
from service.config import PollerMode, Settings
from service.logs import log_event
from service.models._types import as_utc, table_of, utcnow
from service.models.alerts import Alert
from service.models.health import Heartbeat, ProcessRole
from service.notify.alerts import raise_alert, resolve_alert
from service.notify.store import unresolved_keys
from service.worker.heartbeats import newest_beats, purge_heartbeats

HEARTBEATS = table_of(Heartbeat)
ALERTS = table_of(Alert)
CHECK_EVERY_SECONDS = 30
PURGE_EVERY_CHECKS = 120  # once an hour: heartbeats of instances gone past MFX_RETENTION_DAYS
PURGE_BATCH = 1000
# What to check is running when a role falls silent (the poller runs inside `meterfix worker`
# with MFX_POLLER=on, as `make run` has it, or as `meterfix poll`)
_RUNS = {
    "worker": "`meterfix worker`",
    "poller": "`meterfix worker` (with MFX_POLLER=on) or `meterfix poll`",
}


def start_silence_watch(
    engine: Engine, settings: Settings, stop: threading.Event
) -> threading.Thread:
    """A thread checking the heartbeats every CHECK_EVERY_SECONDS until `stop` is set."""
    thread = threading.Thread(
        target=_watch, args=(engine, settings, stop), name="meterfix-silence", daemon=True
    )
    thread.start()
    return thread


def _watch(engine: Engine, settings: Settings, stop: threading.Event) -> None:
    secrets = settings_secrets(settings)
    checks = 0
    while not stop.wait(CHECK_EVERY_SECONDS):
        try:
            check_heartbeats(engine, settings)
            if checks % PURGE_EVERY_CHECKS == 0:  # retention of the heartbeats this room owns
                cutoff = utcnow() - timedelta(days=settings.mfx_retention_days)
                purge_heartbeats(engine, cutoff, PURGE_BATCH)
        except Exception as exc:  # loop edge: database down; the next check goes on
            reason = redact(f"{type(exc).__name__}: {exc}", secrets)
            log_event("heartbeat.check_failed", level=logging.ERROR, reason=reason)
        checks += 1


def silence_key(role: str) -> str:
    return f"heartbeat.silent:{role}"


def check_heartbeats(
    engine: Engine, settings: Settings, now: datetime | None = None
) -> dict[str, float | None]:
    """Raise or resolve the silence alerts; returns each watched role's heartbeat age (s)."""
    now = now or utcnow()
    roles = [ProcessRole.WORKER.value]
    if settings.mfx_poller != PollerMode.OFF:
        roles.append(ProcessRole.POLLER.value)
    with engine.connect() as conn:
        newest = newest_beats(conn, roles)
        open_keys = unresolved_keys(conn, [silence_key(r) for r in roles])
    ages: dict[str, float | None] = {}
    for role in roles:
        last = as_utc(newest.get(role))
        ages[role] = None if last is None else max((now - last).total_seconds(), 0.0)
        silent = last is not None and now - last > timedelta(seconds=settings.mfx_heartbeat_silence)
        if silent and silence_key(role) not in open_keys:
            _raise(engine, role, last, settings.mfx_heartbeat_silence)
        elif not silent and silence_key(role) in open_keys:
            resolve_alert(engine, silence_key(role))
    return ages


def _raise(engine: Engine, role: str, last: datetime | None, silence: int) -> None:
    raise_alert(
        engine,
        key=silence_key(role),
        severity="critical",
        kind="heartbeat.silent",
        subject=f"no {role} heartbeat for more than {silence} s",
        message=f"the newest {role} heartbeat was at {last:%Y-%m-%d %H:%M:%S} UTC; "
        f"check that {_RUNS.get(role, f'`meterfix {role}`')} is running",
        detail={"role": role, "last_beat_at": last.isoformat() if last else None},
    )
