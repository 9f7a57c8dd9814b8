"""What the overview page shows: rows valid/corrected/quarantined per hour or day and errors
by code (both summed from the run rows, never from the audit), open alerts, dead letters and
the health of the worker and the poller (`with_states`: running, exited, stopped or silent)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine

from service.intake.store import count_events, latest_events
from service.jobs.store.run_counts import codes_per_bucket, runs_per_bucket
from service.models._types import utcnow
from service.models.inbox import InboxStatus
from service.notify.store import latest_open_alerts, open_alert_counts
from service.web.store import alert_json, event_json
from service.worker.heartbeats import Ended, beats_of, health_snapshot

LATEST = 10  # open alerts and dead letters listed on the overview


class RoleState(StrEnum):
    """What a role's heartbeats say of it (/api/health's `state`, the overview's card)."""

    RUNNING = "running"  # an instance beat within MFX_HEARTBEAT_SILENCE and has not ended
    EXITED = "exited"  # its last beat said the process exited (`poll --once`, `poll --retry`)
    STOPPED = "stopped"  # its last beat said it stopped (`meterfix poll` or a worker shut down)
    SILENT = "silent"  # no beat for MFX_HEARTBEAT_SILENCE (the silence alert is raised)


# The last beat of a process that ended (`service.worker.heartbeats.beat_ended`)
ENDED = {Ended.EXITED.value: RoleState.EXITED, Ended.STOPPED.value: RoleState.STOPPED}


def role_state(beat: Mapping[str, Any], silence: int) -> RoleState:
    """A poller that ran `meterfix poll --once` (or a `worker --once`) ends with `{"doing":
    "exited"}`, a poller or worker stopped by SIGTERM with `{"doing": "stopped"}`, and beats no
    more: judged by its age alone it looked running (green) until the silence limit passed.
    Ended is said whatever its age (past the limit the card is red too). A worker process
    ended for a restart (`{"doing": "restarted"}`) is judged by its age: the role runs on
    while its supervisor starts the fresh process, which beats at once."""
    doing = _doing(beat)
    if doing in ENDED:
        return ENDED[doing]
    return RoleState.SILENT if float(beat["age_seconds"]) > silence else RoleState.RUNNING


def _doing(beat: Mapping[str, Any]) -> str | None:
    detail = beat.get("detail") or {}
    doing = detail.get("doing") if isinstance(detail, Mapping) else None
    return doing if isinstance(doing, str) else None


def with_states(
    target: Engine | Connection, health: dict[str, Any], silence: int
) -> dict[str, Any]:
    """`health_snapshot(...).as_dict()` with each role's heartbeat given its `state`. A role
    whose newest beat is not running shows its newest running instance if it has one: a
    `poll --retry` that ended while the worker's poller ran said the poller exited."""
    now = datetime.fromisoformat(health["now"])
    for role, beat in health["heartbeats"].items():
        if beat is None:
            continue
        state = role_state(beat, silence)
        if state is not RoleState.RUNNING and (live := _running(target, role, silence, now)):
            beat = health["heartbeats"][role] = live
            state = RoleState.RUNNING
        beat["state"] = state.value
    return health


def _running(
    target: Engine | Connection, role: str, silence: int, now: datetime
) -> dict[str, Any] | None:
    """The newest beat of `role` within the silence limit from an instance still running: not
    one ended for a restart, whose fresh process stopped (or exited) since: the old row,
    seconds old, showed the role running until MFX_HEARTBEAT_SILENCE passed."""
    since = now - timedelta(seconds=silence)
    if isinstance(target, Engine):
        with target.connect() as connection:
            beats = beats_of(connection, role, now, since=since)
    else:
        beats = beats_of(target, role, now, since=since)
    shown = (b.as_dict() for b in beats)
    live = (b for b in shown if _doing(b) != Ended.RESTARTED.value)
    return next((b for b in live if role_state(b, silence) is RoleState.RUNNING), None)


class Bucket(StrEnum):
    HOUR = "hour"
    DAY = "day"


SPANS = {Bucket.HOUR: (timedelta(hours=1), 48), Bucket.DAY: (timedelta(days=1), 30)}


@dataclass
class Overview:
    bucket: Bucket
    labels: list[str]
    valid: list[int]
    corrected: list[int]
    quarantined: list[int]
    by_code: dict[str, dict[str, int]]
    open_alerts: dict[str, int]
    latest_alerts: list[dict[str, Any]]
    dead_letters: int
    latest_dead: list[dict[str, Any]]
    health: dict[str, Any] = field(default_factory=dict)


def overview(engine: Engine, bucket: Bucket, silence: int, now: datetime | None = None) -> Overview:
    """`silence`: MFX_HEARTBEAT_SILENCE, past which a role is shown silent (`with_states`)."""
    now = now or utcnow()
    labels, series, codes = _charts(engine, bucket, now)
    with engine.connect() as connection:
        open_counts = open_alert_counts(connection)
        latest = _latest_open_alerts(connection)
        dead = count_events(connection, InboxStatus.DEAD)
        latest_dead = _latest_dead(connection)
        health = with_states(connection, health_snapshot(connection, now).as_dict(), silence)
    return Overview(bucket, labels, *series, codes, open_counts, latest, dead, latest_dead, health)


ChartData = tuple[list[str], tuple[list[int], list[int], list[int]], dict[str, dict[str, int]]]
Codes = dict[str, tuple[int, int]]  # code -> corrected, quarantined
# A bucket's runs, in short: how many, their counts summed, the latest finish. A run's counts
# are written when it finishes, so a bucket whose fingerprint is unchanged has the same rows
# per code as when they were last summed.
Fingerprint = tuple[object, ...]

# Rows per code per bucket, kept per process with the fingerprint they were summed at: only
# the buckets whose runs changed (the current one, mostly) are summed again. Summing the
# `by_code` objects of 30 days of runs (10,000) costs 50-100 ms; the counts are read every time.
_KEPT: dict[tuple[str, Bucket], dict[str, tuple[Fingerprint, Codes]]] = {}
# Requests are served on threads: one straddling the hour would drop a bucket another still
# reads (a KeyError, a 500 on the overview). One chart is summed at a time.
_KEPT_LOCK = threading.Lock()


def _charts(engine: Engine, bucket: Bucket, now: datetime) -> ChartData:
    step, count = SPANS[bucket]
    start = _floor(now, bucket) - step * (count - 1)
    fmt = "%Y-%m-%d %H:00" if bucket is Bucket.HOUR else "%Y-%m-%d"
    labels = [(start + step * n).strftime(fmt) for n in range(count)]
    with _KEPT_LOCK:
        kept = _KEPT.setdefault((engine.url.render_as_string(hide_password=True), bucket), {})
        return _summed(engine, bucket, labels, kept, start)


def _summed(
    engine: Engine,
    bucket: Bucket,
    labels: list[str],
    kept: dict[str, tuple[Fingerprint, Codes]],
    start: datetime,
) -> ChartData:
    step, _ = SPANS[bucket]
    with engine.connect() as connection:
        series = _series(connection, bucket, start)
        stale = [n for n, label in enumerate(labels) if _changed(kept, series, label)]
        if stale:  # one range, from the first changed bucket to the last
            since, until = start + step * stale[0], start + step * (stale[-1] + 1)
            codes = _by_code(connection, bucket, since, until)
            for label in labels[stale[0] : stale[-1] + 1]:
                fingerprint = series[label][0] if label in series else ()
                kept[label] = (fingerprint, codes.get(label, {}))
    for label in set(kept) - set(labels):
        del kept[label]  # out of the window now
    picked = [series[label][1] if label in series else (0, 0, 0) for label in labels]
    valid, corrected, quarantined = ([value[n] for value in picked] for n in range(3))
    by_code = _by_code_totals(kept[label][1] for label in labels)
    return labels, (valid, corrected, quarantined), by_code


def _changed(
    kept: dict[str, tuple[Fingerprint, Codes]],
    series: dict[str, tuple[Fingerprint, tuple[int, int, int]]],
    label: str,
) -> bool:
    """Whether the bucket's runs changed since its rows per code were summed."""
    now = series[label][0] if label in series else ()
    return label not in kept or kept[label][0] != now


def _by_code_totals(parts: Iterable[Codes]) -> dict[str, dict[str, int]]:
    sums: dict[str, tuple[int, int]] = {}
    for part in parts:
        for code, (corrected, quarantined) in part.items():
            before = sums.get(code, (0, 0))
            sums[code] = (before[0] + corrected, before[1] + quarantined)
    codes = sorted(sums, key=lambda code: (-sum(sums[code]), code))
    return {code: {"corrected": sums[code][0], "quarantined": sums[code][1]} for code in codes}


def _floor(now: datetime, bucket: Bucket) -> datetime:
    hour = now.replace(minute=0, second=0, microsecond=0)
    return hour if bucket is Bucket.HOUR else hour.replace(hour=0)


def _series(
    connection: Connection, bucket: Bucket, start: datetime
) -> dict[str, tuple[Fingerprint, tuple[int, int, int]]]:
    """Per bucket since `start`: its fingerprint, and rows valid, corrected, quarantined."""
    rows = runs_per_bucket(connection, hourly=bucket is Bucket.HOUR, start=start)
    return {label: (fingerprint, counts) for label, counts, fingerprint in rows}


def _by_code(
    connection: Connection, bucket: Bucket, since: datetime, until: datetime
) -> dict[str, Codes]:
    return codes_per_bucket(connection, hourly=bucket is Bucket.HOUR, since=since, until=until)


def _latest_open_alerts(connection: Connection) -> list[dict[str, Any]]:
    return [alert_json(row, []) for row in latest_open_alerts(connection, LATEST)]


def _latest_dead(connection: Connection) -> list[dict[str, Any]]:
    return [event_json(row, []) for row in latest_events(connection, InboxStatus.DEAD, LATEST)]
