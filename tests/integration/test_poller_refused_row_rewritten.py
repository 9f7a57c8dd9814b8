"""A row Stripe refused (an error report) that meterfix holds in quarantine, in a file rewritten
in place: as it was, it is left out (Stripe would refuse it again) and its entry waits for a
fix; changed by hand, it is sent, and when Stripe refuses it again the row waits in quarantine
as it is now. Real parts: the sandbox (playing Stripe, reports sampled as Stripe samples
them), a moto S3 bucket, the bundled poller in import mode, the worker; SQLite and
PostgreSQL."""

from __future__ import annotations

import time

import pytest

from service.poller.passes import run_poll_pass
from tests.integration import refused_row_helpers as refused_row
from tests.integration.test_billing_safety import (  # noqa: F401 (`loop`: a fixture)
    loop,
    originals_billed,
    reported,
)
from tests.integration.test_e2e import Loop


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
    with refused_row.quarantined(loop) as (deps, other, row):
        [entry] = refused_row.entries(loop, "g")
        assert (entry.code, entry.taken_again) == ("meter_event_customer_not_found", None)
        time.sleep(1)
        new: list[object] = ["b", int(str(other[1])) + 30, *other[2:]]
        if not sampled:
            refused_row.refused_elsewhere_first(loop, int(str(other[1])))
        refused_row.put(loop, "day.csv", [other, row, new])
        report = run_poll_pass(deps)
        assert refused_row.refused(loop) == ([] if sampled else ["o0", "o1", "o2"])
        reported(loop)
        assert report.left_out == 2, report  # a (billed) and g (refused as it is)
        assert sorted(loop.accepted()) == ["a", "b"]
        [entry] = refused_row.entries(loop, "g")
        assert (entry.customer, entry.taken_again) == ("cus_ghost", None)
        assert refused_row.waiting(loop) == (1 if sampled else 4)
        refused_row.mapped_and_rerun(loop, deps, "cus_ghost", "cus_nobody")
    billed = ["a", "b", "g-mfx1"] + ([] if sampled else ["o0-mfx1", "o1-mfx1", "o2-mfx1"])
    refused_row.assert_billed_once(loop, billed)


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
    with refused_row.quarantined(loop) as (deps, other, row):
        time.sleep(1)
        refused_row.put(loop, "day.csv", [other, refused_row.fixed_to(row, "cus_phantom")])
        report = run_poll_pass(deps)
        assert (report.sent, report.left_out) == (2, 1), report  # a left out, g sent changed
        assert refused_row.refused(loop) == ["g"]
        reported(loop)
        assert refused_row.held(loop, "g") == [("cus_ghost", False), ("cus_phantom", True)]
        assert refused_row.waiting(loop) == 1
        refused_row.mapped_and_rerun(loop, deps, "cus_phantom")
    refused_row.assert_billed_once(loop, ["a", "g-mfx1"])


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
    with refused_row.quarantined(loop) as (deps, other, row):
        time.sleep(1)
        refused_row.refused_elsewhere_first(loop, int(str(other[1])))
        fixed = refused_row.fixed_to(row, customer)
        refused_row.put(loop, key, [other, fixed] if key == "day.csv" else [fixed])
        run_poll_pass(deps)
        refused_again = customer == "cus_phantom"
        assert refused_row.refused(loop) == (["g"] if refused_again else []) + ["o0", "o1", "o2"]
        reported(loop)
        again = [(customer, True)] if refused_again else []
        assert refused_row.held(loop, "g") == [("cus_ghost", False), *again]
        assert refused_row.waiting(loop) == 3 + refused_again
        refused_row.mapped_and_rerun(loop, deps, "cus_phantom", "cus_nobody")
    billed = ["a", "g-mfx1" if refused_again else "g", "o0-mfx1", "o1-mfx1", "o2-mfx1"]
    refused_row.assert_billed_once(loop, billed)


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
    with refused_row.quarantined(loop) as (deps, other, row):
        time.sleep(1)
        refused_row.refused_elsewhere_first(loop, int(str(other[1])))
        refused_row.put(loop, "day-fixed.csv", [refused_row.fixed_to(row, "cus_alice")])
        run_poll_pass(deps)
        new: list[object] = ["c", int(str(other[1])) + 30, "api_requests", "cus_nobody", "1"]
        refused_row.put(loop, "day-later.csv", [refused_row.fixed_to(row, "cus_phantom"), new])
        run_poll_pass(deps)
        reported(loop)
        assert [q.customer for q in refused_row.entries(loop, "g") if q.taken_again is None] == []
        refused_row.mapped_and_rerun(loop, deps, "cus_phantom", "cus_nobody")
    assert originals_billed(loop)["g"] == 1, sorted(loop.accepted())
