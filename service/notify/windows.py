"""Digest windows: DIGEST_EVERY (an interval such as 15m, 1h, 1d, or a 5-field crontab) in
DIGEST_TZ, as APScheduler triggers.

A window ends at a fire time of the trigger and starts at the fire time before it. Intervals
that divide a day become crontabs so that `1d` means local midnight across DST changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from service.config import parse_duration

_TICK = timedelta(microseconds=1)
_LOOKBACKS = (timedelta(hours=2), timedelta(days=2), timedelta(days=32), timedelta(days=367))
_DAY = 86400
_PROBE_FROM = timedelta(hours=1)
_PROBES = tuple(timedelta(hours=h) for h in (1, 2, 3, 4, 6))
# crontab counts weekdays from Sunday = 0 (7 too); APScheduler 3 from Monday = 0: use names.
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @property
    def previous(self) -> Window:
        """The window of the same length just before this one (for "change vs previous")."""
        return Window(self.start - (self.end - self.start), self.start)


class DigestSchedule:
    """The grid of digest windows for one DIGEST_EVERY / DIGEST_TZ."""

    def __init__(self, every: str, tz: str = "UTC") -> None:
        try:
            self.tz = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"DIGEST_TZ {tz!r} is not a known time zone") from exc
        self.every = every
        self.trigger = build_trigger(every, self.tz)

    def last_end_at_or_before(self, moment: datetime) -> datetime:
        """The newest fire time not after `moment`."""
        for lookback in _LOOKBACKS:
            fire = self._next_from(moment - lookback)
            if fire is not None and fire <= moment:
                following = self._after(fire)
                while following is not None and following <= moment:
                    fire, following = following, self._after(following)
                return fire
        raise ValueError(f"DIGEST_EVERY {self.every!r} fires less than once a year")

    def latest_window(self, now: datetime) -> Window:
        """The newest window that has ended by `now`."""
        end = self.last_end_at_or_before(now)
        return Window(self.last_end_at_or_before(end - _TICK), end)

    def windows_after(self, end: datetime, now: datetime, limit: int) -> list[Window]:
        """Windows that ended after `end` and by `now`, oldest first, at most the `limit`
        newest of them."""
        windows: list[Window] = []
        latest = self.latest_window(now)
        while latest.end > end and len(windows) < limit:
            windows.append(latest)
            latest = Window(self.last_end_at_or_before(latest.start - _TICK), latest.start)
        return windows[::-1]

    def is_boundary(self, moment: datetime) -> bool:
        return self.last_end_at_or_before(moment) == moment

    def _after(self, fire: datetime) -> datetime | None:
        return self._next_from(fire + _TICK)

    def _next_from(self, start: datetime) -> datetime | None:
        """The first fire time at or after `start`. APScheduler 3's CronTrigger skips a day
        when asked from before a DST jump on the day of the jump (checked with
        Europe/Paris on 2026-03-29), so a far answer is checked from a few later starts."""
        first = self._fire(start)
        if first is None or first - start <= _PROBE_FROM:
            return first
        later = (self._fire(start + step) for step in _PROBES)
        return min([first, *(f for f in later if f is not None)])

    def _fire(self, start: datetime) -> datetime | None:
        fire = self.trigger.get_next_fire_time(None, start)
        return fire if isinstance(fire, datetime) else None


def build_trigger(every: str, tz: ZoneInfo) -> BaseTrigger:
    text = every.strip()
    if len(text.split()) == 5:
        return _crontab(text, tz)
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ValueError(
            f"DIGEST_EVERY {every!r} is neither an interval (15m, 1h, 1d) nor a 5-field crontab"
        ) from exc
    if seconds < 60:
        raise ValueError("DIGEST_EVERY must be at least 1m")
    cron = _interval_as_crontab(seconds)
    if cron is not None:
        return _crontab(cron, tz)
    anchor = datetime(2000, 1, 3, tzinfo=tz)  # a Monday midnight: stable across restarts
    return IntervalTrigger(seconds=seconds, start_date=anchor, timezone=tz)


def _interval_as_crontab(seconds: int) -> str | None:
    if seconds == _DAY:
        return "0 0 * * *"
    if seconds == 7 * _DAY:
        return "0 0 * * 1"
    if seconds % 3600 == 0 and _DAY % seconds == 0:
        return f"0 */{seconds // 3600} * * *"
    if seconds % 60 == 0 and 3600 % seconds == 0:
        return f"*/{seconds // 60} * * * *"
    return None


def _crontab(expression: str, tz: ZoneInfo) -> CronTrigger:
    minute, hour, day, month, weekday = expression.split()
    try:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_weekday_names(weekday),
            timezone=tz,
        )
    except ValueError as exc:
        raise ValueError(f"DIGEST_EVERY {expression!r}: {exc}") from exc


def _weekday_names(field: str) -> str:
    """Numeric crontab weekdays as names ("1-5" -> "mon-fri"); steps over `*` stay as is."""
    return ",".join(_weekday_part(part) for part in field.split(","))


def _weekday_part(part: str) -> str:
    body, _, step = part.partition("/")
    names = "-".join(
        _WEEKDAYS[int(p)] if p.isdigit() and int(p) < len(_WEEKDAYS) else p for p in body.split("-")
    )
    return f"{names}/{step}" if step else names
