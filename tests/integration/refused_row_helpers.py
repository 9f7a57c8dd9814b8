"""Shared steps of the refused-row tests (`test_poller_refused_row_*`): `g`, a row Stripe
refused and meterfix quarantined, fixed by hand in a later version of the day's file, then
its customer mapped and re-run; and what those tests read back (its quarantine entries, the
rows still waiting, what Stripe refused since its last reports). Built on the steps of
`test_billing_safety`, so each test reads as its scenario; imported as `refused_row`
(`refused_row.quarantined(loop)`, `refused_row.put(loop, key, rows)`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from sqlmodel import col, select

from service.jobs.store.quarantine_filter import QuarantineFilter
from service.jobs.store.rerun_queue import count_quarantine
from service.models import QuarantinedRow
from service.poller.passes import PollerDeps, run_poll_pass
from tests.integration.test_billing_safety import (
    a_row_stripe_refused,
    add_rules,
    bundled_poller,
    originals_billed,
    rerun,
    usage_csv,
)
from tests.integration.test_e2e import Loop, _put


@contextmanager
def quarantined(running: Loop) -> Iterator[tuple[PollerDeps, list[object], list[object]]]:
    """The bundled poller, once Stripe refused `g` and meterfix quarantined it:
    (the poller's dependencies, a's row, g's row), as `a_row_stripe_refused` gives them."""
    with bundled_poller(running) as deps:
        other, row = a_row_stripe_refused(running, deps)
        yield deps, other, row


def put(running: Loop, key: str, rows: list[list[object]]) -> None:
    """`usage/<key>` written (a new object, or a version of one) holding `rows`."""
    _put(running, key, usage_csv(rows))


def entries(running: Loop, identifier: str) -> list[QuarantinedRow]:
    """The quarantine entries of `identifier`, oldest first."""
    with running.session() as session:
        query = select(QuarantinedRow).where(QuarantinedRow.identifier == identifier)
        return list(session.exec(query.order_by(col(QuarantinedRow.id))).all())


def held(running: Loop, identifier: str) -> list[tuple[str | None, bool]]:
    """Each entry of `identifier`, oldest first: (its customer, whether it still waits)."""
    return [(q.customer, q.taken_again is None) for q in entries(running, identifier)]


def waiting(running: Loop) -> int:
    """How many quarantined rows wait for a fix (not taken again)."""
    with running.engine.connect() as connection:
        return count_quarantine(connection, QuarantineFilter(taken_again=False))


def refused(running: Loop) -> list[str]:
    """The identifiers Stripe refused since its last reports (not reported yet)."""
    return sorted(str(error["identifier"]) for error in running.sandbox.pending_errors())


def refused_elsewhere_first(running: Loop, now: int) -> list[list[object]]:
    """Three rows of a customer Stripe does not know in `a-other.csv`, imported before
    `day.csv`: Stripe's next report samples three rows of the code, theirs."""
    rows: list[list[object]] = [
        [f"o{n}", now - 50, "api_requests", "cus_nobody", "1"] for n in range(3)
    ]
    put(running, "a-other.csv", rows)
    return rows


def mapped_and_rerun(running: Loop, deps: PollerDeps, *customers: str) -> None:
    """The operator maps each of `customers` to cus_alice and re-runs every quarantined row;
    the next pass sends what the re-run corrected."""
    add_rules(running, "".join(f'"{customer}" = "cus_alice"\n' for customer in customers))
    rerun(running)
    run_poll_pass(deps)


def assert_billed_once(running: Loop, billed: list[str]) -> None:
    """Stripe billed exactly `billed` (sorted), each original row once, and nothing waits."""
    accepted = sorted(running.accepted())
    assert accepted == billed, accepted
    assert originals_billed(running) == Counter({b.split("-mfx")[0]: 1 for b in billed})
    assert waiting(running) == 0


def fixed_to(row: list[object], customer: str) -> list[object]:
    """`row` fixed by hand: its customer changed to `customer`, the rest as it was."""
    return [*row[:3], customer, row[4]]
