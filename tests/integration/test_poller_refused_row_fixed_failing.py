"""A row Stripe refused (an error report) that meterfix holds in quarantine, fixed by hand in
the day's file rewritten in place, or copied, but failing our checks as fixed (a timestamp in
milliseconds, a value written `1,234`): the poller hands it to its failed-records file, and
its remediation must not leave it out as sent since (the send under its identifier was
refused, never billed). Real parts: the sandbox, a moto S3 bucket, the bundled poller in
import mode, the worker; SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest

from service.poller.passes import run_poll_pass
from tests.integration import refused_row_helpers as refused_row
from tests.integration.test_billing_safety import loop, reported  # noqa: F401 (`loop`: a fixture)
from tests.integration.test_e2e import Loop


@pytest.mark.parametrize("key", ["day.csv", "day-fixed.csv"])
@pytest.mark.parametrize("how", ["milliseconds", "thousands"])
def test_a_refused_row_fixed_but_failing_our_checks_is_remediated(
    loop: Loop,  # noqa: F811 (the fixture imported above)
    key: str,
    how: str,
) -> None:
    """`g` (cus_ghost) refused by Stripe's report, quarantined; fixed to cus_alice by hand,
    but with its timestamp in milliseconds or its value `1,234`: the poller refuses it (our
    checks), and its remediation corrects it and sends it once (it was left out as sent since,
    version 1 having sent `g`: neither billed nor held). A re-run after `cus_ghost` is mapped
    bills nothing more of it: its pick finds the refused send's entry sent as `g-mfx1`."""
    with refused_row.quarantined(loop) as (deps, other, row):
        [entry] = refused_row.entries(loop, "g")
        assert entry.taken_again is None
        time.sleep(1)
        fixed = refused_row.fixed_to(row, "cus_alice")
        if how == "milliseconds":
            fixed[1] = int(str(row[1])) * 1000
        else:
            fixed[4] = "1,234"
        refused_row.put(loop, key, [other, fixed] if key == "day.csv" else [fixed])
        run_poll_pass(deps)  # g to the failed-records file; its run corrects it
        loop.drain()
        run_poll_pass(deps)  # the corrected file sent
        reported(loop)
        assert sorted(loop.accepted()) == ["a", "g-mfx1"]
        [event] = [e for e in loop.sandbox.meter_events() if e["identifier"] == "g-mfx1"]
        payload = event["payload"]
        assert (payload["stripe_customer_id"], payload["value"]) == (
            "cus_alice",
            str(fixed[4]).replace(",", ""),
        )
        assert event["timestamp"] == row[1], event
        # the refused send's entry, were it held
        refused_row.mapped_and_rerun(loop, deps, "cus_ghost")
    refused_row.assert_billed_once(loop, ["a", "g-mfx1"])
    [entry] = refused_row.entries(loop, "g")  # the refused send's, found sent by the re-run's pick
    assert (entry.customer, entry.rerun_id) == ("cus_ghost", None)
    assert str(entry.taken_again).endswith("sent as g-mfx1 by the poller"), entry.taken_again
