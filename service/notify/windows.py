"""Digest windows: DIGEST_EVERY (an interval such as 15m, 1h, 1d, or a 5-field crontab) in
DIGEST_TZ.

A window ends at a fire time and starts at the fire time before it. Intervals that divide a
day become crontabs so that `1d` means local midnight across DST changes; other intervals
(`90m`, `2d`) count elapsed time. A crontab's times are read on the local wall clock, as cron
reads them: a time the clocks skip fires at the first instant after the jump, and a time they
show twice fires the first time, and again only when the schedule fired within the shift
before it (`1h` and `15m` keep their length the night the clocks go back; `1d` fires once).
APScheduler's triggers (`DigestSchedule.trigger`) only wake the worker: a window the trigger
misses (it skips a day whose midnight does not exist) is sent by the catch-up job a minute
later (service/notify/schedule.py).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from itertools import pairwise
from math import floor
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from service.config.values import parse_duration

_TICK = timedelta(microseconds=1)
_DAY = 86400
_WEEK = timedelta(days=7)  # offset changes of a zone are further apart than this
_YEAR = timedelta(days=367)
_ANCHOR = datetime(2000, 1, 3)  # a Monday midnight: intervals stay put across restarts
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
        form = _crontab_or_seconds(every)
        self.trigger = _trigger(form, self.tz)
        self._fires: _WallClock | _Elapsed = (
            _WallClock(form, self.tz) if isinstance(form, str) else _Elapsed(form, self.tz)
        )

    def last_end_at_or_before(self, moment: datetime) -> datetime:
        """The newest fire time not after `moment` (in DIGEST_TZ)."""
        return self._last_end(moment).astimezone(self.tz)

    def latest_window(self, now: datetime) -> Window:
        """The newest window that has ended by `now`."""
        return self._local(self._latest(now))

    def windows_after(self, end: datetime, now: datetime, limit: int) -> list[Window]:
        """Windows that ended after `end` and by `now`, oldest first, at most the `limit`
        newest of them. Walked forward from `end` when that is near, else back from `now`."""
        end, latest = end.astimezone(UTC), self._latest(now)
        if latest.end - end > (limit + 1) * self._fires.spacing:
            return self._windows_back(end, latest, limit)
        fires = [self._last_end(end)]
        while fires[-1] < latest.end:
            fires.append(self._fires_after(fires[-1]))
        local = [fire.astimezone(self.tz) for fire in fires[-limit - 1 :]]
        return [Window(*pair) for pair in pairwise(local)]

    def _windows_back(self, end: datetime, latest: Window, limit: int) -> list[Window]:
        windows: list[Window] = []
        while latest.end > end and len(windows) < limit:
            windows.append(self._local(latest))
            latest = Window(self._last_end(latest.start - _TICK), latest.start)
        return windows[::-1]

    def is_boundary(self, moment: datetime) -> bool:
        # in UTC: a time of a repeated hour never equals one of another zone (PEP 495)
        return self._last_end(moment) == moment.astimezone(UTC)

    # Inside, times are UTC; what is handed out is in DIGEST_TZ.

    def _last_end(self, moment: datetime) -> datetime:
        """Looks back as far as the usual spacing of fire times, then further."""
        moment = moment.astimezone(UTC)
        lookback = self._fires.spacing
        while True:
            fire = self._fires.first_at_or_after(moment - lookback)
            if fire is not None and fire <= moment:
                following = self._fires_after(fire)
                while following <= moment:
                    fire, following = following, self._fires_after(following)
                return fire
            if lookback >= _YEAR:
                raise ValueError(f"DIGEST_EVERY {self.every!r} fires less than once a year")
            lookback = min(lookback * 4, _YEAR)

    def _fires_after(self, fire: datetime) -> datetime:
        following = self._fires.first_at_or_after(fire + _TICK)
        if following is None:
            raise ValueError(f"DIGEST_EVERY {self.every!r} fires no more")
        return following

    def _latest(self, now: datetime) -> Window:
        end = self._last_end(now)
        return Window(self._last_end(end - _TICK), end)

    def _local(self, window: Window) -> Window:
        return Window(window.start.astimezone(self.tz), window.end.astimezone(self.tz))


class _Elapsed:
    """An interval that does not divide a day: every `seconds` from _ANCHOR local time."""

    def __init__(self, seconds: int, tz: ZoneInfo) -> None:
        self.spacing = timedelta(seconds=seconds)
        self._anchor = _ANCHOR.replace(tzinfo=tz).astimezone(UTC)

    def first_at_or_after(self, start: datetime) -> datetime:
        steps = max(0, -((self._anchor - start) // self.spacing))
        return self._anchor + steps * self.spacing


@dataclass(frozen=True)
class _Repeat:
    """Wall-clock times shown a second time since the clocks went back by `shift`."""

    until: datetime
    shift: timedelta


class _WallClock:
    """A crontab's fire times on DIGEST_TZ's wall clock (naive datetimes inside), turned into
    instants; see the module's docstring for the times the clocks skip or show twice."""

    def __init__(self, expression: str, tz: ZoneInfo) -> None:
        minute, hour, *_ = expression.split()
        self.tz = tz
        self._days = _crontab(expression, UTC)  # UTC stands for a wall clock that never jumps
        self._times = _times_of_day(_crontab(f"{minute} {hour} * * *", UTC))
        gaps = zip(self._times, (*self._times[1:], self._times[0] + timedelta(days=1)), strict=True)
        self.spacing = max(later - earlier for earlier, later in gaps)
        self._matching_days: dict[date, date | None] = {}

    def first_at_or_after(self, start: datetime) -> datetime | None:
        moment = start - _TICK  # the first fire after it; a jump at `start` is then seen
        local = moment.astimezone(self.tz)
        offset = _offset(local)
        repeat = self._repeat_at(moment, local)
        wall_from = local.replace(tzinfo=None) + _TICK
        while True:
            wall = self._next_wall(wall_from)
            if wall is None:
                return None
            if repeat is not None and wall < repeat.until and not self._again(wall, repeat):
                wall_from = wall + _TICK
                continue
            fire = (wall - offset).replace(tzinfo=UTC)
            jump = self._jump(moment, offset, fire)
            if jump is None:
                return fire
            after = _offset(jump.astimezone(self.tz))
            if after > offset and wall < _naive(jump + after):
                return jump  # `wall` was skipped: the first instant after the jump
            repeat = _Repeat(_naive(jump + offset), offset - after) if after < offset else None
            moment, offset, wall_from = jump, after, _naive(jump + after)

    def _again(self, wall: datetime, repeat: _Repeat) -> bool:
        """Whether a time shown again fires again: when the schedule fired within the shift
        before it (hourly, every 15 minutes), not when it fires once a day."""
        earlier = self._next_wall(wall - repeat.shift)
        return earlier is not None and earlier < wall

    def _repeat_at(self, moment: datetime, local: datetime) -> _Repeat | None:
        """The times shown again, when `moment` is in the second pass of a repeated hour."""
        if not local.fold:
            return None
        before = _offset(local.replace(fold=0))
        shift = before - _offset(local)
        jump = self._jump(moment - shift, before, moment)
        return None if jump is None else _Repeat(_naive(jump + before), shift)

    def _jump(self, moment: datetime, offset: timedelta, until: datetime) -> datetime | None:
        """The first instant in (moment, until] whose UTC offset is not `offset`."""
        low = moment
        while low < until:
            high = min(low + _WEEK, until)
            if _offset(high.astimezone(self.tz)) != offset:
                return self._bisect(low, high, offset)
            low = high
        return None

    def _bisect(self, low: datetime, high: datetime, offset: timedelta) -> datetime:
        """Zones change offset on a whole second."""
        low_s, high_s = floor(low.timestamp()), floor(high.timestamp())
        while high_s - low_s > 1:
            middle = (low_s + high_s) // 2
            moment = datetime.fromtimestamp(middle, UTC)
            if _offset(moment.astimezone(self.tz)) == offset:
                low_s = middle
            else:
                high_s = middle
        return datetime.fromtimestamp(high_s, UTC)

    def _next_wall(self, wall: datetime) -> datetime | None:
        """The first fire time at or after `wall` on the wall clock."""
        day, since_midnight = wall.date(), wall - datetime.combine(wall.date(), time())
        while (matching := self._matching_day(day)) is not None:
            if matching != day:
                since_midnight = timedelta(0)
            index = bisect_left(self._times, since_midnight)
            if index < len(self._times):
                return datetime.combine(matching, time()) + self._times[index]
            day, since_midnight = matching + timedelta(days=1), timedelta(0)
        return None

    def _matching_day(self, day: date) -> date | None:
        """The first day from `day` whose date the crontab's day fields take."""
        if day not in self._matching_days:
            if len(self._matching_days) > 4096:
                self._matching_days.clear()
            fire = self._days.get_next_fire_time(None, datetime.combine(day, time(), UTC))
            self._matching_days[day] = fire.date() if isinstance(fire, datetime) else None
        return self._matching_days[day]


def _times_of_day(daily: BaseTrigger) -> tuple[timedelta, ...]:
    midnight = datetime(2000, 1, 1, tzinfo=UTC)
    times: list[timedelta] = []
    fire = daily.get_next_fire_time(None, midnight)
    while isinstance(fire, datetime) and fire - midnight < timedelta(days=1):
        times.append(fire - midnight)
        fire = daily.get_next_fire_time(None, fire + _TICK)
    return tuple(times)


def _offset(local: datetime) -> timedelta:
    offset = local.utcoffset()
    assert offset is not None  # an aware datetime in a ZoneInfo
    return offset


def _naive(moment: datetime) -> datetime:
    """A UTC instant plus an offset, as a wall-clock time."""
    return moment.replace(tzinfo=None)


def build_trigger(every: str, tz: ZoneInfo) -> BaseTrigger:
    return _trigger(_crontab_or_seconds(every), tz)


def _trigger(form: str | int, tz: ZoneInfo) -> BaseTrigger:
    if isinstance(form, str):
        return _crontab(form, tz)
    return IntervalTrigger(seconds=form, start_date=_ANCHOR.replace(tzinfo=tz), timezone=tz)


def _crontab_or_seconds(every: str) -> str | int:
    text = every.strip()
    if len(text.split()) == 5:
        _crontab(text, UTC)  # says what is wrong with it
        return text
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ValueError(
            f"DIGEST_EVERY {every!r} is neither an interval (15m, 1h, 1d) nor a 5-field crontab"
        ) from exc
    if seconds < 60:
        raise ValueError("DIGEST_EVERY must be at least 1m")
    cron = _interval_as_crontab(seconds)
    return seconds if cron is None else cron


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


def _crontab(expression: str, tz: tzinfo) -> BaseTrigger:
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
