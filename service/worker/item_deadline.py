"""An item's deadline under `MFX_TASK_TIME_LIMIT` (`liveness.call_with_time_limit` waits on
it), and the faulthandler watchdog armed past it.

An item's limit grows with what it legitimately waits on: while a call whose deadline is
extended for its size (a Stripe file's contents, a bucket object read, downloaded or
uploaded: the time their bytes take at 1 MiB/s, `call_deadline.CallDeadline.extend_to`) is
under way, its time does not count against the item, up to what the call was given
(`grow_task_with_calls`), and `MAX_GRANTED_SECONDS` in all. A file larger than the limit
allows, read steadily, is no longer failed at every try (its rows never corrected); one whose
bytes stop is failed once its allowance is used up. Once a call ends, only the time it took
stays granted: the allowance it did not use is not the item's (a 1 GB file fetched in 10 s
gave an item hanging after it ~1000 s more).
"""

from __future__ import annotations

import faulthandler
import logging
import math
import sys
import time
from typing import NamedTuple

from service.adapters.call_deadline import CallDeadline
from service.logs import log_event

HARD_LIMIT_GRACE_SECONDS = 30.0  # the watchdog's margin past the time limit
# The most an item's calls may add to its time limit (`ItemDeadline.given`): a 3.5 GiB file at
# 1 MiB/s (a usage file in the bucket is at most 1 GB); past it the task fails as a hung one.
MAX_GRANTED_SECONDS = 3600.0


class ItemTimes(NamedTuple):
    """An item's clock, replaced whole (the waiting thread reads it while the item's thread
    moves it): its deadline (`time.monotonic()`), the seconds its ended calls added to it, and
    its calls under way extended for their size (each: its start and the seconds it was
    given beyond its own deadline)."""

    at: float
    granted: float
    calls: dict[CallDeadline, tuple[float, float]]

    def given(self, now: float, but: CallDeadline | None = None) -> float:
        """The seconds its calls added by `now` (the one `but` left out): the ended ones',
        and the time each call under way has taken, up to what it was given;
        `MAX_GRANTED_SECONDS` in all at most."""
        live = sum(min(now - s, g) for call, (s, g) in self.calls.items() if call is not but)
        return min(self.granted + live, MAX_GRANTED_SECONDS)

    def latest(self) -> float:
        """The latest the item may run to, should its calls under way take all they were
        given."""
        grown = sum(grown for _, grown in self.calls.values())
        return self.at + min(grown, MAX_GRANTED_SECONDS - self.granted)


class ItemDeadline:
    """When an item's time is up; paused while it waits for its turn (a lock another item
    holds: that wait is not its work) and counted afresh after; and while a call extended for
    its size is under way (`call_grown`), up to what the call was given: once the call ends
    (`call_ended`) the time it took stays granted, the rest of its allowance does not (it
    did: a 1 GB file fetched in 10 s gave the item ~1000 s more to hang in). Its `times` are
    written by the item's thread, read by the waiting one."""

    def __init__(self, seconds: float, watchdog: bool) -> None:
        self.seconds, self.watchdog = seconds, watchdog
        self.times = ItemTimes(time.monotonic() + seconds, 0.0, {})
        self.waited = True  # False once the waiting thread has given up on the item

    def given(self, now: float) -> float:
        return self.times.given(now)

    def left(self) -> float:
        times, now = self.times, time.monotonic()
        return times.at + times.given(now) - times.granted - now

    def call_grown(self, call: CallDeadline, started: float, grown: float) -> None:
        """`call` is given `grown` s more for its size: the item may wait on it that long."""
        times = self.times
        self.times = times._replace(calls={**times.calls, call: (started, grown)})
        self._arm()

    def call_ended(self, call: CallDeadline) -> None:
        """Only the time `call` took stays granted."""
        times, now = self.times, time.monotonic()
        if call not in times.calls:
            return
        took = times.given(now) - times.given(now, but=call)
        calls = {other: span for other, span in times.calls.items() if other is not call}
        self.times = ItemTimes(times.at + took, times.granted + took, calls)
        self._arm()

    def _arm(self) -> None:
        """The faulthandler watchdog past the latest the item may run now."""
        if self.watchdog and self.waited and self.times.at != math.inf:
            arm_watchdog(self.times.latest() - time.monotonic() + HARD_LIMIT_GRACE_SECONDS)

    def pause(self) -> None:
        self.times = self.times._replace(at=math.inf)
        if self.watchdog and self.waited:
            faulthandler.cancel_dump_traceback_later()

    def restart(self) -> None:
        times = self.times
        self.times = times._replace(at=time.monotonic() + self.seconds + times.granted)
        self._arm()


def arm_hard_limit(limit_seconds: float) -> bool:
    """The watchdog that ends the process `HARD_LIMIT_GRACE_SECONDS` past `limit_seconds`;
    False when it cannot be armed."""
    return arm_watchdog(limit_seconds + HARD_LIMIT_GRACE_SECONDS)


def arm_watchdog(seconds: float) -> bool:
    try:
        faulthandler.dump_traceback_later(seconds, exit=True, file=sys.stderr)
    except (AttributeError, OSError, ValueError) as exc:  # stderr without a file descriptor
        log_event("worker.watchdog_unavailable", level=logging.WARNING, error=type(exc).__name__)
        return False
    return True
