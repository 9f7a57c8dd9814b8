"""An identifier used again days later in another file, for other usage, after a re-run of
the first file's quarantined row sent it as `x-mfx1`, is billed: `CopyRuns` (e604ee6) asked
the runs over day1.csv (it holds `x`, unsent) by the identifier alone and left day4.csv's `x`
out as sent before (never billed). Another key's run counts only for the same usage (the
same second as the rules read it). Real parts: moto S3, the sandbox, the bundled poller, the
worker; SQLite and PostgreSQL."""

from __future__ import annotations

import time

from service.poller.passes import run_poll_pass
from tests.integration.test_billing_safety import (  # noqa: F401
    bundled_poller,
    loop,
    rerun,
    usage_csv,
)
from tests.integration.test_e2e import Loop, _put


def test_an_identifier_used_again_days_after_a_rerun_over_another_file_is_billed(
    loop: Loop,  # noqa: F811 (the fixture imported above)
) -> None:
    now = int(time.time())
    day1 = now - 3 * 86400
    with bundled_poller(loop) as deps:
        old = ["x", day1, "legacy_calls", "cus_alice", "5"]
        _put(loop, "day1.csv", usage_csv([["a", day1, "api_requests", "cus_alice", "3"], old]))
        run_poll_pass(deps)
        loop.drain()
        loop.sandbox.create_meter("legacy_calls")
        assert rerun(loop)["rows"] == 1
        assert deps.meters is not None
        deps.meters.refresh()
        run_poll_pass(deps)  # the re-run's corrected file: x-mfx1 billed
        loop.drain()
        time.sleep(1)
        # day 4: `x` used again for other usage
        _put(loop, "day4.csv", usage_csv([["x", now - 30, "api_requests", "cus_alice", "7"]]))
        run_poll_pass(deps)
        loop.drain()
    events = [
        (e["identifier"], e["event_name"], e["payload"].get("value"))
        for e in loop.sandbox.meter_events()
    ]
    assert sorted(e for e in events if e[0].startswith("x")) == [
        ("x", "api_requests", "7"),
        ("x-mfx1", "legacy_calls", "5"),
    ], events
