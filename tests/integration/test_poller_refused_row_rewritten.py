"""A row Stripe refused (an error report) that meterfix holds in quarantine, in a file rewritten
in place: as it was, it is left out (Stripe would refuse it again) and its entry waits for a
fix; changed by hand, it is sent, and when Stripe refuses it again the row waits in quarantine
as it is now. Real parts: the sandbox (playing Stripe, reports sampled as Stripe samples
them), a moto S3 bucket, the bundled poller in import mode, the worker; SQLite and
PostgreSQL."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlmodel import col, select

from service.jobs.store.quarantine_filter import QuarantineFilter
from service.jobs.store.reruns import count_quarantine
from service.models import QuarantinedRow
from service.poller.passes import run_poll_pass
from tests.integration.test_billing_safety import (  # noqa: F401 (`loop`: a fixture)
    a_row_stripe_refused,
    add_rules,
    bundled_poller,
    loop,
    originals_billed,
    reported,
    rerun,
    usage_csv,
)
from tests.integration.test_e2e import Loop, _put


def _entries(running: Loop, identifier: str) -> list[QuarantinedRow]:
    """The quarantine entries of `identifier`, oldest first."""
    with running.session() as session:
        query = select(QuarantinedRow).where(QuarantinedRow.identifier == identifier)
        return list(session.exec(query.order_by(col(QuarantinedRow.id))).all())


def _waiting(running: Loop) -> int:
    with running.engine.connect() as connection:
        return count_quarantine(connection, QuarantineFilter(taken_again=False))


def _refused(running: Loop) -> list[str]:
    """The identifiers Stripe refused since its last reports (not reported yet)."""
    return sorted(str(error["identifier"]) for error in running.sandbox.pending_errors())


def _refused_elsewhere_first(running: Loop, now: int) -> list[list[object]]:
    """Three rows of a customer Stripe does not know in `a-other.csv`, imported before
    `day.csv`: Stripe's next report samples three rows of the code, theirs."""
    rows: list[list[object]] = [
        [f"o{n}", now - 50, "api_requests", "cus_nobody", "1"] for n in range(3)
    ]
    _put(running, "a-other.csv", usage_csv(rows))
    return rows


@pytest.mark.parametrize("sampled", [True, False])
def test_an_unchanged_refused_row_of_a_file_rewritten_in_place_is_left_out_and_waits(
    loop: Loop,  # noqa: F811 (the fixture imported above)
    sampled: bool,
) -> None:
    """Stripe refused `g` (a customer it does not know) and meterfix quarantined it. The file
    was rewritten in place with `g` as it was and a new row `b`: the poller sent `g` again
    (a row Stripe refused is never billed) and marked its entry taken again ("usage/day.csv
    (ETag …), sent by the poller …") once Stripe acknowledged the batch. Stripe refused it a
    second time; its report, whose samples were other rows of the code, did not name it:
    `g` neither billed nor waiting, and a re-run after mapping the customer left it. Now it is
    left out (the poller's digest of it is the one the refused send held) and its entry waits;
    the re-run sends it once."""
    with bundled_poller(loop) as deps:
        other, row = a_row_stripe_refused(loop, deps)
        [entry] = _entries(loop, "g")
        assert (entry.code, entry.taken_again) == ("meter_event_customer_not_found", None)
        time.sleep(1)
        new: list[object] = ["b", int(str(other[1])) + 30, *other[2:]]
        if not sampled:
            _refused_elsewhere_first(loop, int(str(other[1])))
        _put(loop, "day.csv", usage_csv([other, row, new]))
        report = run_poll_pass(deps)
        assert _refused(loop) == ([] if sampled else ["o0", "o1", "o2"])
        reported(loop)
        assert report.left_out == 2, report  # a (billed) and g (refused as it is)
        assert sorted(loop.accepted()) == ["a", "b"]
        [entry] = _entries(loop, "g")
        assert (entry.customer, entry.taken_again) == ("cus_ghost", None)
        assert _waiting(loop) == (1 if sampled else 4)
        add_rules(loop, '"cus_ghost" = "cus_alice"\n"cus_nobody" = "cus_alice"\n')
        rerun(loop)
        run_poll_pass(deps)
    billed = ["a", "b", "g-mfx1"] + ([] if sampled else ["o0-mfx1", "o1-mfx1", "o2-mfx1"])
    assert sorted(loop.accepted()) == billed
    assert originals_billed(loop) == Counter({b.split("-mfx")[0]: 1 for b in billed})
    assert _waiting(loop) == 0


def test_a_refused_row_changed_by_hand_and_refused_again_waits_as_it_is_now(
    loop: Loop,  # noqa: F811 (the fixture imported above)
) -> None:
    """Stripe refused `g` and meterfix quarantined it; the customer changed it by hand, to
    another customer Stripe does not know either, and rewrote the file in place. The poller
    sends it (changed, it may be billed now), Stripe refuses it again, and its report (which
    names it) has its run quarantine it anew as it is now: one entry of `g` waits, holding
    `cus_phantom`; the older one (holding `cus_ghost`, marked taken again when Stripe
    acknowledged the send) no longer waits, so a re-run does not send the old customer's row
    beside it. Mapped, the re-run bills `g` once."""
    with bundled_poller(loop) as deps:
        other, row = a_row_stripe_refused(loop, deps)
        time.sleep(1)
        _put(loop, "day.csv", usage_csv([other, [*row[:3], "cus_phantom", row[4]]]))
        report = run_poll_pass(deps)
        assert (report.sent, report.left_out) == (2, 1), report  # a left out, g sent changed
        assert _refused(loop) == ["g"]
        reported(loop)
        held = _entries(loop, "g")
        assert [(q.customer, q.taken_again is None) for q in held] == [
            ("cus_ghost", False),
            ("cus_phantom", True),
        ]
        assert _waiting(loop) == 1
        add_rules(loop, '"cus_phantom" = "cus_alice"\n')
        rerun(loop)
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "g-mfx1"]
    assert originals_billed(loop) == Counter({"a": 1, "g": 1})
    assert _waiting(loop) == 0


@pytest.mark.parametrize(
    ("customer", "key"),
    [("cus_phantom", "day.csv"), ("cus_alice", "day.csv"), ("cus_phantom", "day-fixed.csv")],
)
def test_a_changed_row_the_report_does_not_sample_waits_if_refused_again(
    loop: Loop,  # noqa: F811 (the fixture imported above)
    customer: str,
    key: str,
) -> None:
    """As above (`day.csv` rewritten in place, or the row fixed in a copy, `day-fixed.csv`),
    but the report of the send samples three other rows of the code (`o0`..`o2`, imported
    first), not `g`. Fixed to `cus_phantom`, a customer Stripe never had, `g` was refused
    again: its entry had been marked taken again on the stream's 200 and nothing named it
    after, so no entry of it waited (usage lost, no trace). The report's run over the file
    that sent it now takes it: an entry holding `cus_phantom` waits, and once mapped the
    re-run bills `g` once. Fixed to `cus_alice`, Stripe billed it (the report's errors are the
    other rows'): nothing of it waits, nothing bills it twice."""
    with bundled_poller(loop) as deps:
        other, row = a_row_stripe_refused(loop, deps)
        time.sleep(1)
        _refused_elsewhere_first(loop, int(str(other[1])))
        fixed = [*row[:3], customer, row[4]]
        _put(loop, key, usage_csv([other, fixed] if key == "day.csv" else [fixed]))
        run_poll_pass(deps)
        refused_again = customer == "cus_phantom"
        assert _refused(loop) == (["g"] if refused_again else []) + ["o0", "o1", "o2"]
        reported(loop)
        held = [(q.customer, q.taken_again is None) for q in _entries(loop, "g")]
        assert held == [("cus_ghost", False)] + ([(customer, True)] if refused_again else [])
        assert _waiting(loop) == 3 + refused_again
        add_rules(loop, '"cus_phantom" = "cus_alice"\n"cus_nobody" = "cus_alice"\n')
        rerun(loop)
        run_poll_pass(deps)
    billed = ["a", "g-mfx1" if refused_again else "g", "o0-mfx1", "o1-mfx1", "o2-mfx1"]
    assert sorted(loop.accepted()) == billed
    assert originals_billed(loop) == Counter({b.split("-mfx")[0]: 1 for b in billed})
    assert _waiting(loop) == 0


def test_a_copy_that_left_the_row_out_does_not_take_it_for_a_report(
    loop: Loop,  # noqa: F811 (the fixture imported above)
) -> None:
    """g refused (quarantined), then fixed to cus_alice in day-fixed.csv: sent, billed. A later
    copy, day-later.csv, holds g for cus_phantom (a customer Stripe never had; the poller
    leaves it out: g sent already) and a new row c Stripe refuses unsampled, so the report's
    run reads day-later.csv. Its g is not the report's: Stripe billed g from day-fixed.csv,
    and a re-run after cus_phantom is mapped bills nothing more of it (a review of c15f9f5:
    the run took day-later.csv's g by the identifier's last send, and the re-run billed
    g-mfx1 beside g)."""
    with bundled_poller(loop) as deps:
        other, row = a_row_stripe_refused(loop, deps)
        time.sleep(1)
        _refused_elsewhere_first(loop, int(str(other[1])))
        _put(loop, "day-fixed.csv", usage_csv([[*row[:3], "cus_alice", row[4]]]))
        run_poll_pass(deps)
        new: list[object] = ["c", int(str(other[1])) + 30, "api_requests", "cus_nobody", "1"]
        _put(loop, "day-later.csv", usage_csv([[*row[:3], "cus_phantom", row[4]], new]))
        run_poll_pass(deps)
        reported(loop)
        assert [q.customer for q in _entries(loop, "g") if q.taken_again is None] == []
        add_rules(loop, '"cus_phantom" = "cus_alice"\n"cus_nobody" = "cus_alice"\n')
        rerun(loop)
        run_poll_pass(deps)
    assert originals_billed(loop)["g"] == 1, sorted(loop.accepted())
