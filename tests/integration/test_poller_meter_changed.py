"""A file whose import failed part-way, resumed after its meter changed: the rows Stripe
acknowledged are billed (never handed to remediation as failed), the rows of a batch never
acknowledged that fail now are quarantined with their reason, none is dropped. moto S3, the
sandbox over HTTP and the worker running the remediation, SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from service.adapters.stripe_client import build_stripe_client
from service.models import Alert, BucketObject, PollerBatch, QuarantinedRow
from service.poller.passes import run_poll_pass
from tests.integration.test_billing_safety import bundled_poller, loop, usage_csv  # noqa: F401
from tests.integration.test_e2e import Loop, _put
from tests.integration.test_poller_incidents import _OneBatchFails


@pytest.mark.parametrize("successor", [False, True], ids=["alone", "with_successor"])
def test_rows_of_a_batch_never_acknowledged_are_quarantined_when_the_meter_is_deactivated(
    loop: Loop,  # noqa: F811  (the fixture imported from the module that defines it)
    successor: bool,
) -> None:
    """README: "no usage is lost". Batch 0 of a 1,000-row file fails (5xx past its retries)
    while batches 1-9 are acknowledged; the meter is then deactivated and the file resumed.

    Instead: every row failed validation on the resume and all 1,000 went to remediation as
    failed (900 of them billed), which left all of them out as "sent since" (each lay in a
    recorded batch): nothing quarantined, no alert, rows 0-99 never billed nor quarantined."""
    meter = loop.sandbox.create_meter("calls")
    if successor:  # rerouted, the rows Stripe may have billed went out again as m-0-mfx1
        loop.sandbox.create_meter("calls_v2")
        rules = Path(loop.settings.mfx_rules)
        rules.write_text(rules.read_text() + '[meter_successors]\n"calls" = "calls_v2"\n')
    stamp = int(time.time()) - 120
    rows: list[list[object]] = [[f"m-{i}", stamp, "calls", "cus_alice", "1"] for i in range(1000)]
    _put(loop, "m.csv", usage_csv(rows))
    with bundled_poller(loop) as deps:
        settings = loop.settings
        client = build_stripe_client(settings)
        deps.sink = _OneBatchFails(
            client, settings, workers=2, base_delay=0.01, row="m-0", others=9
        )
        assert run_poll_pass(deps).retry_files == 1
    billed = sorted(loop.accepted())
    assert billed == sorted(f"m-{i}" for i in range(100, 1000))
    loop.sandbox.deactivate_meter(str(meter["id"]))
    with bundled_poller(loop) as deps:
        deps.clock = lambda: datetime.now(UTC) + timedelta(hours=1)
        report = run_poll_pass(deps)
    assert (report.imported, report.rows, report.sent, report.failed_rows) == (1, 1000, 900, 100)
    loop.drain()
    with loop.session() as session:
        held = session.exec(select(QuarantinedRow)).all()
        alerts = session.exec(select(Alert)).all()
        obj = session.exec(select(BucketObject).where(BucketObject.key == "usage/m.csv")).one()
        batches = session.exec(select(PollerBatch)).all()
    assert sorted(str(q.record["identifier"]) for q in held) == sorted(f"m-{i}" for i in range(100))
    # sent once without an answer: Stripe may have billed them; no rule may send them again
    # under a new identifier (a successor meter would have rerouted them as m-0-mfx1)
    assert {q.code for q in held} == {"sent_without_answer"}, {q.reason for q in held}
    assert all("Stripe may have billed it" in q.reason and "archived" in q.reason for q in held)
    assert [a.subject for a in alerts] == ["run #1 (poller): 100 rows quarantined"]
    assert (obj.rows, obj.sent, obj.failed) == (1000, 900, 100)
    assert sorted(loop.accepted()) == billed  # nothing sent again
    assert len(batches) == 10
