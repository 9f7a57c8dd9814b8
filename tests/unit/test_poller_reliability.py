"""The poller's reliability decisions without servers: what is transient, how long to wait,
when to give up, and the bitmap of rows already acknowledged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import stripe

from service.adapters.meter_event_answers import is_transient, retry_after_seconds, session_lifetime
from service.errors import HorizonPassed
from service.poller.failures import BACKOFF_CAP, backoff, judge
from service.poller.object_progress import ObjectProgress, SentBatch, row_was_sent

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SIX_HOURS = 6 * 3600


def _error(cls: type[stripe.StripeError], status: int | None, **headers: str) -> Any:
    return cls("boom", http_status=status, headers=headers or None)


def _progress(**fields: Any) -> ObjectProgress:
    return ObjectProgress(object_id=1, first_seen=NOW, **fields)


class Refused(Exception):
    permanent = True


def test_transient_errors() -> None:
    assert is_transient(_error(stripe.RateLimitError, 429))
    assert is_transient(_error(stripe.APIConnectionError, None))
    assert is_transient(_error(stripe.APIError, 500)) and is_transient(_error(stripe.APIError, 503))
    assert is_transient(_error(stripe.APIError, 409))
    invalid: Any = stripe.InvalidRequestError  # its __init__ is untyped
    assert not is_transient(invalid("bad", "events", http_status=400))
    assert not is_transient(_error(stripe.PermissionError, 403))


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_seconds(_error(stripe.RateLimitError, 429, **{"Retry-After": "7"})) == 7
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    from_date = retry_after_seconds(_error(stripe.RateLimitError, 429, **{"retry-after": later}))
    assert from_date is not None and 25 < from_date <= 30
    assert retry_after_seconds(_error(stripe.RateLimitError, 429)) is None
    assert (
        retry_after_seconds(_error(stripe.RateLimitError, 429, **{"Retry-After": "soon"})) is None
    )


def test_session_lifetime_comes_from_expires_at() -> None:
    assert session_lifetime("2026-11-25T12:00:00.000Z", "2026-11-25T12:15:00.000Z") == 900
    assert session_lifetime("2026-11-25T12:00:00.000Z", "2026-11-25T12:00:01.500Z") == 1.5
    assert session_lifetime("garbage", "2026-11-25T12:15:00.000Z") == 900
    assert session_lifetime("2026-11-25T12:00:00Z", "2026-11-26T12:00:00Z") == 900  # never longer


def test_backoff_doubles_with_jitter_up_to_a_cap() -> None:
    for attempts, cap in [(1, 30), (2, 60), (3, 120), (7, 1800), (40, 1800)]:
        for _ in range(20):
            delay = backoff(attempts)
            assert timedelta(seconds=cap / 2) <= delay <= timedelta(seconds=cap)
    assert backoff(100) <= BACKOFF_CAP


def test_judge_backs_off_then_gives_up_after_the_configured_time() -> None:
    first = judge(RuntimeError("HTTP 500"), _progress(attempts=1), NOW, SIX_HOURS)
    assert not first.give_up and first.failing_since == NOW
    assert first.next_attempt_at and NOW < first.next_attempt_at <= NOW + timedelta(seconds=30)
    since = NOW - timedelta(hours=5, minutes=59)
    still = judge(RuntimeError(), _progress(failing_since=since, attempts=9), NOW, SIX_HOURS)
    assert not still.give_up and still.failing_since == since
    later = NOW + timedelta(minutes=2)
    over = judge(RuntimeError(), _progress(failing_since=since, attempts=10), later, SIX_HOURS)
    assert (over.give_up, over.why, over.next_attempt_at) == (True, "lasting", None)


def test_judge_gives_up_at_once_on_a_refusal_or_past_the_horizon() -> None:
    assert judge(Refused(), _progress(attempts=1), NOW, SIX_HOURS).why == "permanent"
    stale = (SentBatch(3, 301, 100, NOW - timedelta(hours=23, minutes=1), None),)
    horizon = judge(HorizonPassed(stale), _progress(attempts=1), NOW, SIX_HOURS)
    assert (horizon.give_up, horizon.why) == (True, "horizon")
    assert "1 unacknowledged batches (100 rows)" in str(HorizonPassed(stale))


def test_the_gave_up_subject_says_a_short_window_in_minutes() -> None:
    """`MFX_POLLER_GIVE_UP_AFTER=90`: the subject said "import failing for 0.0 h"."""
    from remediation.ports import ObjectInfo
    from service.poller.failures import _gave_up_advice

    obj = ObjectInfo(key="day.csv", etag="e", size=1, last_modified=NOW)
    since = NOW - timedelta(minutes=2)
    over = judge(RuntimeError(), _progress(failing_since=since, attempts=3), NOW, 90)
    subjects = [
        _gave_up_advice(obj, over, _progress(), window)[0] for window in (90, 45, SIX_HOURS)
    ]
    assert subjects == [
        f"day.csv: import failing for {span}; the poller gave up"
        for span in ("1.5 min", "45 s", "6.0 h")
    ]


def test_only_unacknowledged_batches_older_than_23_hours_are_past_the_horizon() -> None:
    old, young = NOW - timedelta(hours=23), NOW - timedelta(hours=22, minutes=59)
    progress = _progress(
        acked_batches=2,
        unacked=(SentBatch(2, 201, 100, old, None), SentBatch(3, 301, 5, young, None)),
    )
    assert [b.number for b in progress.past_horizon(NOW)] == [2]
    assert progress.oldest_resend() == old


def test_sent_rows_bitmap() -> None:
    bitmap = bytearray(3)
    for row in (1, 8, 17):
        bitmap[row >> 3] |= 1 << (row & 7)
    assert [row for row in range(30) if row_was_sent(bitmap, row)] == [1, 8, 17]


def test_the_horizon_reason_gives_the_first_send_in_utc_whatever_zone_it_was_read_in() -> None:
    """PostgreSQL gives timestamps back in the session's time zone: a first send read in New
    York was printed as it came, labelled UTC (five hours off) in the object's error, the
    alert and `poll --retry`. A naive time (SQLite) is UTC."""
    from zoneinfo import ZoneInfo

    sent = NOW - timedelta(hours=24)
    zoned = sent.astimezone(ZoneInfo("America/New_York"))
    naive = sent.replace(tzinfo=None)
    for first in (zoned, naive):
        stale = (SentBatch(3, 301, 100, first, None),)
        assert "first sent at 2026-11-24 12:00 UTC" in str(HorizonPassed(stale)), first
