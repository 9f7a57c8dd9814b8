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
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

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
    limit = timedelta(seconds=settings.mfx_heartbeat_silence)
    last_beats = {role: as_utc(newest.get(role)) for role in roles}
    silent = {role for role, last in last_beats.items() if last and now - last > limit}
    for role, last in last_beats.items():
        if role in silent and silence_key(role) not in open_keys:
            stuck = role == ProcessRole.POLLER and ProcessRole.WORKER not in silent
            _raise(engine, role, last, settings.mfx_heartbeat_silence, stuck)
        elif role not in silent and silence_key(role) in open_keys:
            resolve_alert(engine, silence_key(role))
    return {
        role: None if last is None else max((now - last).total_seconds(), 0.0)
        for role, last in last_beats.items()
    }


def _raise(engine: Engine, role: str, last: datetime | None, silence: int, stuck: bool) -> None:
    """`stuck`: the role is the poller and the worker still beats (its thread may be stuck)."""
    doing = _newest_detail(engine, role) if stuck else {}
    raise_alert(
        engine,
        key=silence_key(role),
        severity="critical",
        kind="heartbeat.silent",
        subject=f"no {role} heartbeat for more than {silence} s",
        message=_what_to_do(role, f"{last:%Y-%m-%d %H:%M:%S} UTC", doing),
        detail={"role": role, "last_beat_at": last.isoformat() if last else None}
        | ({"last_beat_detail": doing} if doing else {}),
    )


def _what_to_do(role: str, last: str, doing: Mapping[str, Any]) -> str:
    """The alert's message. A poller thread whose last beat said it was in a pass (`pass`,
    or `import` of an object) while the worker beats is stuck in it: the message said to
    check that the worker runs, and it did."""
    if doing.get("doing") == "pass":
        return (
            f"the poller has been in one pass since {last} (a bucket or Stripe call that "
            "does not return) while the worker runs; restart the worker (or `meterfix poll`)"
        )
    if doing.get("doing") == "import":
        return (
            f"the poller has been importing {doing.get('key')} since {last} (a bucket or "
            "Stripe call that does not return) while the worker runs; restart the worker "
            "(or `meterfix poll`)"
        )
    runs = _RUNS.get(role, f"`meterfix {role}`")
    return f"the newest {role} heartbeat was at {last}; check that {runs} is running"


def _newest_detail(engine: Engine, role: str) -> dict[str, Any]:
    """What the newest heartbeat of `role` said it was doing (its `detail`)."""
    query = (
        select(HEARTBEATS.c.detail)
        .where(HEARTBEATS.c.role == role)
        .order_by(HEARTBEATS.c.last_beat_at.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        detail = conn.execute(query).scalar()
    return dict(detail) if isinstance(detail, dict) else {}
