"""Stripe's error report about a row the bundled poller sent, when a row of the same version
under its identifier, which the poller refused, was quarantined under `identifier_taken`
(b9db89d). `k1` for `cus_ghost` (5) goes out; `k1` in milliseconds (7) is quarantined so;
Stripe then refuses the sent `k1` (no such customer). The error report's run counted the
identifier_taken entry as the row handled already and selected nothing: it logged "remediated
1 row(s)", quarantined nothing, and the 5 was in no quarantine entry, never billed, even once
the operator mapped `cus_ghost`. Real parts: the sandbox, moto S3, the bundled poller, the
worker; SQLite and PostgreSQL."""

from __future__ import annotations

import time

from service.poller.passes import run_poll_pass
from tests.integration.test_billing_safety import (  # noqa: F401 (`loop`: a fixture)
    add_rules,
    bundled_poller,
    loop,
    reported,
    rerun,
    usage_csv,
)
from tests.integration.test_e2e import Loop, _put
from tests.integration.test_poller_identifier_taken import _billed, _held


def _value(record: dict[str, object]) -> object:
    payload = record.get("payload")
    return payload.get("value") if isinstance(payload, dict) else None


def test_a_sent_row_stripe_refuses_is_quarantined_beside_its_refused_twin(
    loop: Loop,  # noqa: F811 (the fixture imported above)
) -> None:
    now = int(time.time()) - 300
    rows = [
        ["a", now, "api_requests", "cus_alice", "3"],
        ["k1", now - 1, "api_requests", "cus_ghost", "5"],  # sent; Stripe: no such customer
        ["k1", now * 1000, "api_requests", "cus_ghost", "7"],  # refused by us (milliseconds)
    ]
    _put(loop, "day.csv", usage_csv(rows))
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)  # a and k1 (5) sent, k1 (7) handed over: identifier_taken
        reported(loop)  # Stripe's report about k1 (5)
        held = sorted((e.code, e.identifier, _value(e.record)) for e in _held(loop.engine))
        assert held == [
            ("identifier_taken", "k1", "7"),
            ("meter_event_customer_not_found", "k1", "5"),
        ]
        add_rules(loop, '"cus_ghost" = "cus_alice"\n')
        rerun(loop)
        run_poll_pass(deps)
        reported(loop)
    # the 5 billed once mapped; the refused 7 never (it may be k1's usage again)
    assert _billed(loop) == [("a", "3"), ("k1-mfx1", "5")]
