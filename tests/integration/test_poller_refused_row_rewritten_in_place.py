"""A row Stripe refused, fixed by hand in the day's file rewritten in place and sent again by
the bundled poller: the error report's run judges it by that send (the version that sent it,
when), not by the first version's (imported_rows keeps one row per identifier and object, the
first version's). Real parts as in `test_poller_refused_row_rewritten`: the sandbox, a moto
S3 bucket, the bundled poller in import mode, the worker; SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlmodel import select

from service.models import PollerBatch
from service.poller.passes import run_poll_pass
from tests.integration import refused_row_helpers as refused_row
from tests.integration.test_billing_safety import (  # noqa: F401 (`loop`: a fixture)
    loop,
    originals_billed,
    reported,
)
from tests.integration.test_e2e import Loop


def _sent_days_before(running: Loop, days: int) -> None:
    """Every batch recorded so far first sent `days` days earlier than it was."""
    with running.session() as session:
        for batch in session.exec(select(PollerBatch)).all():
            batch.first_sent_at -= timedelta(days=days)
            session.add(batch)
        session.commit()


def _reported_refused_again_and_waiting(running: Loop) -> None:
    """Stripe refused `g` (fixed to cus_phantom) again beside `o0`..`o2`, and its report,
    which samples theirs, handled: an entry of `g` holding cus_phantom waits beside the
    three, the older one (cus_ghost) no longer."""
    assert refused_row.refused(running) == ["g", "o0", "o1", "o2"]
    reported(running)
    assert refused_row.held(running, "g") == [("cus_ghost", False), ("cus_phantom", True)]
    assert refused_row.waiting(running) == 4


def test_a_version_that_left_the_row_out_does_not_take_it_for_a_report(
    loop: Loop,  # noqa: F811 (the fixture imported above)
) -> None:
    """`g` refused (quarantined), then fixed to cus_alice in `day.csv` rewritten in place:
    sent, billed. A third version holds `g` for cus_phantom (a customer Stripe never had;
    the poller leaves it out: `g` sent already) and a new row `c` Stripe refuses unsampled,
    so the report's run reads that version. Its `g` is not the report's: nothing of it waits,
    and a re-run after cus_phantom is mapped bills nothing more of it (a review of 391a8cf:
    the run took it as sent again, quarantined it, and the re-run billed g-mfx1 beside g)."""
    with refused_row.quarantined(loop) as (deps, other, row):
        time.sleep(1)
        refused_row.refused_elsewhere_first(loop, int(str(other[1])))
        refused_row.put(loop, "day.csv", [other, refused_row.fixed_to(row, "cus_alice")])
        run_poll_pass(deps)
        time.sleep(1)
        new: list[object] = ["c", int(str(other[1])) + 30, "api_requests", "cus_nobody", "1"]
        refused_row.put(loop, "day.csv", [other, refused_row.fixed_to(row, "cus_phantom"), new])
        run_poll_pass(deps)
        reported(loop)
        assert [q.customer for q in refused_row.entries(loop, "g") if q.taken_again is None] == []
        refused_row.mapped_and_rerun(loop, deps, "cus_phantom", "cus_nobody")
    assert originals_billed(loop)["g"] == 1, sorted(loop.accepted())


def test_a_row_fixed_days_after_the_first_send_waits_if_refused_again(
    loop: Loop,  # noqa: F811 (the fixture imported above)
) -> None:
    """As `test_a_changed_row_the_report_does_not_sample_waits_if_refused_again` (cus_phantom,
    `day.csv` rewritten in place), but the first version was sent two days before the fix:
    the report's run judged `g` by that send, past `WINDOW_BEFORE`, so its entry was marked
    taken again and nothing of it waited (usage lost). It is judged by the send of the fix
    now: an entry holding cus_phantom waits, and once mapped the re-run bills `g` once."""
    with refused_row.quarantined(loop) as (deps, other, row):
        _sent_days_before(loop, 2)
        time.sleep(1)
        refused_row.refused_elsewhere_first(loop, int(str(other[1])))
        refused_row.put(loop, "day.csv", [other, refused_row.fixed_to(row, "cus_phantom")])
        run_poll_pass(deps)
        _reported_refused_again_and_waiting(loop)
        refused_row.mapped_and_rerun(loop, deps, "cus_phantom", "cus_nobody")
    billed = ["a", "g-mfx1", "o0-mfx1", "o1-mfx1", "o2-mfx1"]
    refused_row.assert_billed_once(loop, billed)


def test_a_fix_held_unchanged_by_a_later_version_waits_if_refused_again(
    loop: Loop,  # noqa: F811 (the fixture imported above)
) -> None:
    """`g` fixed to cus_phantom (a customer Stripe never had) in `day.csv`'s second version:
    sent, refused again unsampled. A third version holds `g` as the second sent it, and a new
    row `b`; the poller leaves `g` out (sent already), and that version is the one the
    report's run reads (the second is gone from the bucket). Its `g` is the row Stripe
    refused (what the second version sent): an entry holding cus_phantom waits, and once
    mapped the re-run bills `g` once (a review of eea03b9: the run took `g` only when the
    version it reads sent it, nothing waited, usage lost)."""
    with refused_row.quarantined(loop) as (deps, other, row):
        time.sleep(1)
        refused_row.refused_elsewhere_first(loop, int(str(other[1])))
        fixed = refused_row.fixed_to(row, "cus_phantom")
        refused_row.put(loop, "day.csv", [other, fixed])
        run_poll_pass(deps)
        time.sleep(1)
        new: list[object] = ["b", int(str(other[1])) + 30, *other[2:]]
        refused_row.put(loop, "day.csv", [other, fixed, new])
        run_poll_pass(deps)
        _reported_refused_again_and_waiting(loop)
        refused_row.mapped_and_rerun(loop, deps, "cus_phantom", "cus_nobody")
    billed = ["a", "b", "g-mfx1", "o0-mfx1", "o1-mfx1", "o2-mfx1"]
    refused_row.assert_billed_once(loop, billed)
