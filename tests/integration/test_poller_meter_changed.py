"""A file whose import failed part-way, resumed after its meter changed: the rows Stripe
acknowledged are billed (never handed to remediation as failed), the rows of a batch never
acknowledged that fail now are quarantined with their reason, none is dropped. moto S3, the
sandbox over HTTP and the worker running the remediation, SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import col, select

from service.adapters.stripe_client import build_stripe_client
from service.models import Alert, BucketObject, ImportedRow, PollerBatch, QuarantinedRow
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


def test_rows_a_rewritten_file_sent_again_never_acknowledged_are_quarantined_as_its_own(
    loop: Loop,  # noqa: F811
) -> None:
    """Version 1 of m.csv: batch 0 (m-0..m-99) fails, batches 1-9 are acknowledged. Version 2,
    rewritten in place with a row more, sends m-0..m-99 again (version 1's batch was never
    acknowledged, within the horizon: recorded on their rows as sent again, `resent_etag`),
    and that batch fails too; the meter is then deactivated and version 2 resumed.

    Instead: the pass read the rows version 2 sent by its own etag only, so m-0..m-99, failing
    now, were never marked not sent: their send again stayed recorded and remediation held
    them as `identifier_taken`, "also row N of usage/m.csv, which the poller sent" (the row
    itself), never to be sent. Marked not sent, they were left out as sent by version 1 (in
    its batch never acknowledged): neither billed for sure nor quarantined."""
    meter = loop.sandbox.create_meter("calls")
    stamp = int(time.time()) - 120
    rows: list[list[object]] = [[f"m-{i}", stamp, "calls", "cus_alice", "1"] for i in range(1000)]
    _put(loop, "m.csv", usage_csv(rows))
    with bundled_poller(loop) as deps:
        client = build_stripe_client(loop.settings)
        deps.sink = _OneBatchFails(
            client, loop.settings, workers=2, base_delay=0.01, row="m-0", others=9
        )
        assert run_poll_pass(deps).retry_files == 1
    billed = sorted(f"m-{i}" for i in range(100, 1000))
    assert sorted(loop.accepted()) == billed
    _put(loop, "m.csv", usage_csv([*rows, ["m-1000", stamp, "calls", "cus_alice", "1"]]))
    with bundled_poller(loop) as deps:
        deps.sink = _OneBatchFails(
            client, loop.settings, workers=2, base_delay=0.01, row="m-0", others=1
        )
        assert run_poll_pass(deps).retry_files == 1
    assert sorted(loop.accepted()) == sorted([*billed, "m-1000"])
    with loop.session() as session:
        again = session.exec(select(ImportedRow).where(ImportedRow.identifier == "m-0")).one()
    assert again.resent_etag not in (None, again.etag) and again.resent_row == 1, again
    loop.sandbox.deactivate_meter(str(meter["id"]))
    with bundled_poller(loop) as deps:
        deps.clock = lambda: datetime.now(UTC) + timedelta(hours=1)
        report = run_poll_pass(deps)
    assert (report.imported, report.failed_rows) == (1, 100)
    loop.drain()
    with loop.session() as session:
        held = session.exec(select(QuarantinedRow)).all()
        resent = session.exec(
            select(ImportedRow).where(col(ImportedRow.resent_etag).is_not(None))
        ).all()
    assert sorted(str(q.record["identifier"]) for q in held) == sorted(f"m-{i}" for i in range(100))
    assert {q.code for q in held} == {"sent_without_answer"}, {q.reason for q in held}
    assert all("Stripe may have billed it" in q.reason and "archived" in q.reason for q in held)
    assert resent == []  # marked not sent by version 2: its send again forgotten
    assert sorted(loop.accepted()) == sorted([*billed, "m-1000"])  # nothing sent again
