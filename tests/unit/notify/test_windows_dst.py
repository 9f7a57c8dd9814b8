"""Digest windows across the DST changes of 2026: times the clocks skip fire at the first
instant after the jump, times they show twice fire once unless the schedule is hourly or
more often (service/notify/windows.py)."""

from __future__ import annotations

from bisect import bisect_right
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from service.notify.windows import DigestSchedule, Window

ZONES = (
    "America/Santiago",  # midnight skipped on Sep 6, 23:00 shown twice on Apr 4
    "America/Havana",  # midnight skipped on Mar 8, shown twice on Nov 1
    "Asia/Beirut",  # midnight skipped on Mar 29
    "Europe/Paris",
    "Europe/London",
    "America/New_York",
    "Australia/Lord_Howe",  # clocks move by 30 minutes
    "UTC",
)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
PERIODS = {
    "1d": DAY,
    "1h": HOUR,
    "15m": timedelta(minutes=15),
    "90m": timedelta(minutes=90),
    "2d": 2 * DAY,
    "0 0 * * 0": 7 * DAY,
    "0 2 * * *": DAY,
    "0 9 * * 1-5": DAY,  # three days up to a Monday
}


def _windows_of_2026(schedule: DigestSchedule) -> list[Window]:
    year_start = datetime(2026, 1, 1, tzinfo=schedule.tz)
    year_end = datetime(2027, 1, 1, tzinfo=schedule.tz)
    return schedule.windows_after(year_start, year_end, limit=40_000)


def _in_utc(window: Window) -> tuple[datetime, datetime]:
    return window.start.astimezone(UTC), window.end.astimezone(UTC)


def _first_instant(day: date, tz: ZoneInfo) -> datetime:
    """Found by asking the zone which instants fall on `day`, not by building its midnight."""
    before = datetime(day.year, day.month, day.day, tzinfo=UTC) - 15 * HOUR
    step = timedelta(minutes=15)  # every zone's offset is a multiple of 15 minutes
    while before.astimezone(tz).date() < day:
        before += step
    while (before - timedelta(seconds=1)).astimezone(tz).date() == day:
        before -= timedelta(seconds=1)
    return before


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("every", list(PERIODS))
def test_every_window_of_2026_is_contiguous_and_about_its_period(every: str, zone: str) -> None:
    schedule = DigestSchedule(every, zone)
    windows = _windows_of_2026(schedule)
    assert len(windows) >= timedelta(days=300) // PERIODS[every] // 2
    starts = [window.start.astimezone(UTC) for window in windows]
    ends = [window.end.astimezone(UTC) for window in windows]
    assert starts[1:] == ends[:-1]  # in UTC: a repeated hour's times compare equal locally
    for window, start, end in zip(windows, starts, ends, strict=True):
        period = PERIODS[every]
        if every == "0 9 * * 1-5" and window.end.weekday() == 0:
            period = 3 * DAY
        assert period - HOUR <= end - start <= period + HOUR, window
    assert all(schedule.is_boundary(w.end) for w in windows[:: max(1, len(windows) // 200)])


@pytest.mark.parametrize("zone", ZONES)
def test_every_local_day_ends_a_daily_window_at_its_first_instant(zone: str) -> None:
    tz = ZoneInfo(zone)
    ends = [w.end.astimezone(UTC) for w in _windows_of_2026(DigestSchedule("1d", zone))]
    days = [date(2026, 1, 2) + timedelta(days=n) for n in range(365)]
    assert ends == [_first_instant(day, tz) for day in days]


def _local(every: str, zone: str, now: datetime) -> tuple[str, str]:
    window = DigestSchedule(every, zone).latest_window(now)
    return window.start.isoformat(), window.end.isoformat()


@pytest.mark.parametrize(
    ("every", "zone", "now", "expected"),
    [
        # Santiago's midnight of Sep 6 does not exist: that day's window ends at 01:00
        ("1d", "America/Santiago", "2026-09-06T23:00", ("09-05T00:00-04", "09-06T01:00-03")),
        ("1d", "America/Santiago", "2026-09-07T01:00", ("09-06T01:00-03", "09-07T00:00-03")),
        ("1d", "America/Havana", "2026-03-08T12:00", ("03-07T00:00-05", "03-08T01:00-04")),
        ("1d", "Asia/Beirut", "2026-03-29T12:00", ("03-28T00:00+02", "03-29T01:00+03")),
        ("0 0 * * 0", "America/Santiago", "2026-09-07T12:00", ("08-30T00:00-04", "09-06T01:00-03")),
        ("0 2 * * *", "Europe/Paris", "2026-03-29T12:00", ("03-28T02:00+01", "03-29T03:00+02")),
        # Havana's midnight of Nov 1 is shown twice: the day's window starts at the first
        ("1d", "America/Havana", "2026-11-02T01:00", ("11-01T00:00-04", "11-02T00:00-05")),
        ("0 2 * * *", "Europe/Paris", "2026-10-25T12:00", ("10-24T02:00+02", "10-25T02:00+02")),
        ("0 2 * * *", "Europe/Paris", "2026-10-26T12:00", ("10-25T02:00+02", "10-26T02:00+01")),
        # hourly: the hour shown twice is one more window
        ("1h", "Europe/Paris", "2026-10-25T02:30+01", ("10-25T02:00+02", "10-25T02:00+01")),
        ("1h", "Europe/Paris", "2026-10-25T03:30+01", ("10-25T02:00+01", "10-25T03:00+01")),
        ("15m", "Europe/Paris", "2026-03-29T03:10", ("03-29T01:45+01", "03-29T03:00+02")),
        # Lord Howe moves by 30 minutes: 02:00 does not exist on Oct 4
        ("1h", "Australia/Lord_Howe", "2026-10-04T02:45", ("10-04T01:00+10:30", "10-04T02:30+11")),
        ("1d", "Australia/Lord_Howe", "2026-10-05T01:00", ("10-04T00:00+10:30", "10-05T00:00+11")),
    ],
)
def test_windows_at_the_changes(every: str, zone: str, now: str, expected: tuple[str, str]) -> None:
    moment = datetime.fromisoformat(now)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    start, end = _local(every, zone, moment)
    assert (_short(start), _short(end)) == expected


def _short(iso: str) -> str:
    """2026-09-06T01:00:00-03:00 as 09-06T01:00-03."""
    day_time, offset = iso[5:16], iso[19:]
    return day_time + (offset[:3] if offset.endswith(":00") else offset)


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("every", ["1d", "1h", "0 0 * * 0", "0 2 * * *"])
def test_windows_walked_back_from_now_are_those_walked_forward(every: str, zone: str) -> None:
    """A few windows long after `end` are found walking back from `now` (the newest window,
    then the one before...): the same windows as the walk forward, around each change."""
    schedule = DigestSchedule(every, zone)
    walked = [_in_utc(window) for window in _windows_of_2026(schedule)]
    ends = [end for _, end in walked]
    long_ago = datetime(2025, 6, 1, tzinfo=UTC)
    for now in (walked[n][1] + HOUR for n in range(10, len(walked), max(1, len(walked) // 60))):
        back = schedule.windows_after(long_ago, now, limit=3)
        newest = bisect_right(ends, now) - 1
        assert [_in_utc(window) for window in back] == walked[newest - 2 : newest + 1], now
