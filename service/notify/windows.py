"""Digest windows: DIGEST_EVERY (an interval such as 15m, 1h, 1d, or a 5-field crontab) in
DIGEST_TZ, as APScheduler triggers.

A window ends at a fire time of the trigger and starts at the fire time before it. Intervals
that divide a day become crontabs so that `1d` means local midnight across DST changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from service.config import parse_duration

_TICK = timedelta(microseconds=1)
_LOOKBACKS = (timedelta(hours=2), timedelta(days=2), timedelta(days=32), timedelta(days=367))
_DAY = 86400
_PROBE_FROM = timedelta(hours=1)
_PROBES = tuple(timedelta(hours=h) for h in (1, 2, 3, 4, 6))
_FOLD_PROBES = (timedelta(seconds=1), timedelta(minutes=1), *_PROBES, timedelta(hours=25))
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
        """The newest fire time not after `moment` (in DIGEST_TZ)."""
        return self._last_end(moment).astimezone(self.tz)

    def latest_window(self, now: datetime) -> Window:
        """The newest window that has ended by `now`."""
        return self._local(self._latest(now))

    def windows_after(self, end: datetime, now: datetime, limit: int) -> list[Window]:
        """Windows that ended after `end` and by `now`, oldest first, at most the `limit`
        newest of them."""
        windows: list[Window] = []
        latest = self._latest(now)
        while latest.end > end and len(windows) < limit:
            windows.append(self._local(latest))
            latest = Window(self._last_end(latest.start - _TICK), latest.start)
        return windows[::-1]

    def is_boundary(self, moment: datetime) -> bool:
        return self._last_end(moment) == moment

    # Inside, times are UTC (`_fire`); what is handed out is in DIGEST_TZ.

    def _last_end(self, moment: datetime) -> datetime:
        moment = moment.astimezone(UTC)
        for lookback in _LOOKBACKS:
            fire = self._next_from(moment - lookback)
            if fire is not None and fire <= moment:
                following = self._after(fire)
                while following is not None and following <= moment:
                    fire, following = following, self._after(following)
                return fire
        raise ValueError(f"DIGEST_EVERY {self.every!r} fires less than once a year")

    def _latest(self, now: datetime) -> Window:
        end = self._last_end(now)
        return Window(self._last_end(end - _TICK), end)

    def _local(self, window: Window) -> Window:
        return Window(window.start.astimezone(self.tz), window.end.astimezone(self.tz))

    def _after(self, fire: datetime) -> datetime | None:
        """The first fire time after `fire`. Where the clocks go back, APScheduler 3 may
        answer a fire time of the repeated hour that is not after `fire` (the pass looped
        forever on it): later starts are probed, and a window may then span the fold."""
        following = self._next_from(fire + _TICK)
        for step in _FOLD_PROBES:
            if following is None or following > fire:
                return following
            following = self._next_from(fire + step)
        return following if following is not None and following > fire else None

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
        """In UTC: two local times of the hour that happens twice compare by their wall
        clock in their own zone (fold ignored), and adding to one is wall-clock arithmetic."""
        fire = self.trigger.get_next_fire_time(None, start.astimezone(UTC))
        return fire.astimezone(UTC) if isinstance(fire, datetime) else None


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


def _crontab(expression: str, tz: ZoneInfo) -> BaseTrigger:
    """A 5-field crontab read as cron reads it: weekdays 0-7 from Sunday (APScheduler 3
    counts from Monday: each is given by name), and a day of the month and a weekday both
    restricted fire on either (cron's rule; APScheduler would need both)."""
    minute, hour, day, month, weekday = expression.split()
    try:
        days = _weekdays(weekday)
        fields = {"minute": minute, "hour": hour, "month": month, "timezone": tz}
        if day != "*" and days != "*":
            return OrTrigger(
                [
                    CronTrigger(day=day, day_of_week="*", **fields),
                    CronTrigger(day="*", day_of_week=days, **fields),
                ]
            )
        return CronTrigger(day=day, day_of_week=days, **fields)
    except ValueError as exc:
        raise ValueError(f"DIGEST_EVERY {expression!r}: {exc}") from exc


def _weekdays(field: str) -> str:
    """A crontab weekday field as APScheduler's list of day names (`*` stays `*`): numbers
    0-7 from Sunday (7 is Sunday too) or names, lists, ranges and steps (`*/2` is Sunday,
    Tuesday, Thursday, Saturday; `0-3` Sunday to Wednesday; `1/2` from Monday on)."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        body, slash, step_text = part.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"weekday step {step_text!r} is not a positive number")
        step = int(step_text) if slash else 1
        if body == "*":
            first, last = 0, 6
        elif "-" in body:
            low, high = body.split("-", 1)
            first, last = _weekday(low), _weekday(high)
            if last == 0 and high.strip() in ("7",):
                last = 7
        else:
            first = _weekday(body)
            last = 6 if slash else first
        if first > last:
            raise ValueError(f"weekday range {body!r} runs backwards")
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_WEEKDAYS[d] for d in sorted(days))


def _weekday(text: str) -> int:
    """0-7 (Sunday is 0 and 7) or a day's three-letter name, as a number from Sunday = 0."""
    name = text.strip().lower()
    if name.isdigit() and int(name) <= 7:
        return int(name) % 7 if int(name) != 7 else 0
    if name in _WEEKDAYS:
        return _WEEKDAYS.index(name)
    raise ValueError(f"weekday {text!r} is neither 0-7 nor a day's name")
