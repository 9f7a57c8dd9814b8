"""An item's time limit grows by what its calls are given for their size (`CallDeadline.
extend_to`), `MAX_GRANTED_SECONDS` in all at most: real threads, the real watchdog thread of
call deadlines, no sockets."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from service.adapters.call_deadline import CallDeadline
from service.errors import TimeLimitExceeded
from service.worker import item_deadline
from service.worker.item_deadline import MAX_GRANTED_SECONDS
from service.worker.leftovers import sweep_leftovers
from service.worker.liveness import call_with_time_limit


def _transfer(base: float, extended: float, takes: float) -> str:
    """A call given `base` s, then `extended` s in all (its size known), taking `takes` s."""
    deadline = CallDeadline(base, "a transfer", [])
    try:
        deadline.extend_to(extended)
        time.sleep(takes)
    finally:
        deadline.cancel()
    return "read"


def test_an_item_waits_on_a_call_as_long_as_the_call_was_given() -> None:
    """Before, an item was failed at its own limit (0.3 s) while the call it waited on was
    allowed 2 s for its size: the call could never end inside the item."""
    assert call_with_time_limit(lambda: _transfer(0.3, 2.0, 1.0), 0.3, name="t-granted") == "read"


def test_an_item_is_still_failed_past_what_was_granted() -> None:
    with pytest.raises(TimeLimitExceeded) as raised:
        call_with_time_limit(lambda: _transfer(0.2, 0.5, 3.0), 0.2, name="t-past")
    assert raised.value.reason == (
        "exceeded the 0.2 s time limit (MFX_TASK_TIME_LIMIT) and the 0.3 s more its "
        "transfers were given"
    )


def test_what_calls_add_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(item_deadline, "MAX_GRANTED_SECONDS", 0.2)
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded) as raised:
        call_with_time_limit(lambda: _transfer(0.2, 60.0, 3.0), 0.2, name="t-bounded")
    assert time.monotonic() - started < 1.5
    assert "and the 0.2 s more" in raised.value.reason


def test_a_download_dir_an_item_may_still_read_is_not_swept(tmp_path: Path) -> None:
    """A worker starting sweeps the temporary directories untouched for twice the limit (its
    argument): an item granted time for a large file may still read one that old, so what
    it may be granted is waited for too."""
    limit = 60.0
    within = tmp_path / "meterfix-dl-within"
    past = tmp_path / "meterfix-dl-past"
    for folder, age in ((within, 2 * limit + 10), (past, 2 * limit + MAX_GRANTED_SECONDS + 10)):
        folder.mkdir()
        (folder / "failed-records.csv").write_text("identifier\n")
        then = time.time() - age
        for path in (folder / "failed-records.csv", folder):
            os.utime(path, (then, then))
    assert sweep_leftovers(2 * limit, tmp_path) == 1
    assert within.exists() and not past.exists()


def _fast_transfer_then(extended: float, then: Callable[[], None]) -> str:
    """A large file read quickly (its call given `extended` s for its size, done in 0.05 s),
    then `then` (the task's own work)."""
    _transfer(0.3, extended, 0.05)
    then()
    return "done"


def test_a_task_hung_after_a_fast_transfer_is_failed_at_its_own_limit() -> None:
    """Before, a call's whole size allowance was added to the task and kept once the call
    ended: a transfer allowed 5 s, done in 0.05 s, gave the task hanging after it 5 s more
    (a 1 GB file fetched in 10 s: ~1000 s more). Only the time the transfer took is granted."""
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded) as raised:
        call_with_time_limit(
            lambda: _fast_transfer_then(5.0, lambda: time.sleep(30)), 0.3, name="t-hang"
        )
    assert time.monotonic() - started < 0.8
    assert re.fullmatch(
        r"exceeded the 0\.3 s time limit \(MFX_TASK_TIME_LIMIT\) and the 0\.0\d+ s more its "
        r"transfers were given",
        raised.value.reason,
    ), raised.value.reason


def test_transfers_ended_add_only_the_time_they_took() -> None:
    def work() -> str:
        for _ in range(3):
            _transfer(0.3, 1.3, 0.0)  # 1 s more each, none of it used
        time.sleep(30)
        return "hung"

    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        call_with_time_limit(work, 0.3, name="t-three")
    assert time.monotonic() - started < 0.8


def test_a_task_keeps_its_own_time_after_a_transfer_longer_than_its_limit() -> None:
    """The time a transfer took beyond the limit stays granted: the task still has what was
    left of its own limit to work on the file after it."""
    assert (
        call_with_time_limit(
            lambda: _transfer(0.4, 3.0, 1.0) + _fast_transfer_then(0.3, lambda: time.sleep(0.2)),
            0.4,
            name="t-after",
        )
        == "readdone"
    )
