"""A quarantine reason says who found a row's problem: the bundled poller's own validation
refused the rows of its failed-records file, not Stripe. moto S3, the sandbox over HTTP and
the worker running the remediation, SQLite and PostgreSQL."""

from __future__ import annotations

import time

from sqlmodel import select

from service.models import QuarantinedRow
from service.poller.passes import run_poll_pass
from tests.integration.test_billing_safety import bundled_poller, loop, usage_csv  # noqa: F401
from tests.integration.test_e2e import Loop, _put


def test_a_row_the_poller_found_too_old_is_not_said_found_so_by_stripe(
    loop: Loop,  # noqa: F811  (the fixture imported from the module that defines it)
) -> None:
    """Instead: the demo's 40-day-old row, which never reached Stripe, was quarantined as
    "Stripe found it more than 35 days old" (a re-run of it said the truth: two reasons for
    one row)."""
    old = int(time.time()) - 40 * 86400
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(old))
    rows: list[list[object]] = [
        ["old-1", old, "api_requests", "cus_alice", "1"],
        ["old-2", iso, "api_requests", "cus_alice", "1"],
    ]
    _put(loop, "old.csv", usage_csv(rows))
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)
    loop.drain()
    with loop.session() as session:
        held = {q.identifier: q.reason for q in session.exec(select(QuarantinedRow)).all()}
    assert sorted(held) == ["old-1", "old-2"], held
    assert loop.accepted() == []  # never sent: Stripe never saw them
    for reason in held.values():
        assert "Stripe" not in reason and "more than 35 days before the reference time" in reason
