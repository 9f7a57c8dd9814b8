"""DIGEST_EVERY and DIGEST_TZ as windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.notify.windows import DigestSchedule, Window

NOW = datetime(2026, 11, 30, 10, 52, tzinfo=UTC)  # a Monday


def _window(every: str, tz: str = "UTC", now: datetime = NOW) -> tuple[str, str]:
    window = DigestSchedule(every, tz).latest_window(now)
    return window.start.isoformat(), window.end.isoformat()


@pytest.mark.parametrize(
    ("every", "tz", "expected"),
    [
        ("1d", "UTC", ("2026-11-29T00:00:00+00:00", "2026-11-30T00:00:00+00:00")),
        ("15m", "UTC", ("2026-11-30T10:30:00+00:00", "2026-11-30T10:45:00+00:00")),
        ("1h", "UTC", ("2026-11-30T09:00:00+00:00", "2026-11-30T10:00:00+00:00")),
        ("1d", "Europe/Paris", ("2026-11-29T00:00:00+01:00", "2026-11-30T00:00:00+01:00")),
        # crontab weekdays count from Sunday = 0: "1-5" is Monday to Friday
        ("0 9 * * 1-5", "UTC", ("2026-11-27T09:00:00+00:00", "2026-11-30T09:00:00+00:00")),
        ("30 8 * * 0", "UTC", ("2026-11-22T08:30:00+00:00", "2026-11-29T08:30:00+00:00")),
    ],
)
def test_latest_window(every: str, tz: str, expected: tuple[str, str]) -> None:
    assert _window(every, tz) == expected


def test_a_daily_window_follows_local_midnight_across_dst() -> None:
    after_change = datetime(2026, 3, 30, 12, tzinfo=UTC)  # Paris moved to +02:00 on Mar 29
    start, end = _window("1d", "Europe/Paris", after_change)
    assert (start, end) == ("2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00")


def test_missed_windows_are_listed_oldest_first_and_bounded() -> None:
    schedule = DigestSchedule("1h")
    since = NOW - timedelta(hours=5)
    windows = schedule.windows_after(since, NOW, limit=24)
    assert [w.end.hour for w in windows] == [6, 7, 8, 9, 10]
    assert [w.end.hour for w in schedule.windows_after(since, NOW, limit=2)] == [9, 10]
    assert schedule.windows_after(windows[-1].end, NOW, limit=24) == []


def test_boundaries_and_previous_window() -> None:
    schedule = DigestSchedule("15m")
    assert schedule.is_boundary(datetime(2026, 11, 30, 10, 45, tzinfo=UTC))
    assert not schedule.is_boundary(datetime(2026, 11, 30, 10, 46, tzinfo=UTC))
    window = Window(NOW - timedelta(hours=24), NOW)
    assert window.previous == Window(NOW - timedelta(hours=48), NOW - timedelta(hours=24))


@pytest.mark.parametrize(
    ("every", "tz", "message"),
    [
        ("weekly", "UTC", "neither an interval"),
        ("30s", "UTC", "at least 1m"),
        ("61 * * * *", "UTC", "DIGEST_EVERY"),
        ("1d", "Mars/Olympus", "DIGEST_TZ"),
    ],
)
def test_bad_settings_say_what_is_wrong(every: str, tz: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DigestSchedule(every, tz)
