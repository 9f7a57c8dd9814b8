"""An error report about rows of two objects; one object is deleted from the bucket before
the worker handles the report. The rows of the other object (rejected by Stripe, fixable by
the customer map) must still be corrected and billed; the report is partial, not a dead task.
"""

# ruff: noqa: F811  (fixtures imported from the modules that define them)
from __future__ import annotations

from sqlmodel import select

from service.models import ErrorReport, InboxEvent
from service.poller.passes import PollerDeps, run_poll_pass
from service.worker.loop import InboxWorker
from tests.integration.test_e2e import BUCKET, Loop, render
from tests.integration.test_e2e_index import _flush, _rows, deps, loop  # noqa: F401


def test_a_deleted_object_does_not_keep_the_other_objects_rows_from_being_billed(
    loop: Loop, deps: PollerDeps
) -> None:
    for name, ids in (("a", ["a0", "a1"]), ("b", ["b0", "b1"])):
        specs = [{"identifier": i, "customer": "acme-42"} for i in ids]
        loop.s3.put_object(Bucket=BUCKET, Key=f"usage/{name}.csv", Body=render(_rows(specs), "csv"))
    run_poll_pass(deps)  # index mode: meterfix records identifier -> object
    loop.sandbox.connector_poll()  # Stripe takes both; acme-42 is no Stripe customer
    assert loop.accepted() == []
    loop.s3.delete_object(Bucket=BUCKET, Key="usage/a.csv")  # the customer removes a.csv
    _flush(loop)  # Stripe's error report arrives
    worker = InboxWorker(loop.engine, loop.settings)
    for _ in range(3):
        worker.drain()
    loop.sandbox.connector_poll()  # Stripe takes the corrected file
    with loop.session() as session:
        tasks = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).all()
        reports = session.exec(select(ErrorReport)).all()
    states = [(t.event_type, t.status, t.last_error, t.outcome) for t in tasks] + [
        sorted(loop.objects())
    ]
    assert sorted(loop.accepted()) == ["b0-mfx1", "b1-mfx1"], (loop.accepted(), states)
    assert [r.status for r in reports] == ["partial"], states


def test_a_deleted_object_found_beyond_the_samples_does_not_abort_the_report(
    loop: Loop, deps: PollerDeps
) -> None:
    """Samples all in a.csv; the search beyond the samples finds b.csv (and c.csv), but b.csv
    was deleted since. a.csv's and c.csv's rows must be billed, the report marked partial."""
    for name, ids in (("a", ["a0", "a1", "a2", "a3"]), ("b", ["b0"]), ("c", ["c0", "c1"])):
        specs = [{"identifier": i, "customer": "acme-42"} for i in ids]
        loop.s3.put_object(Bucket=BUCKET, Key=f"usage/{name}.csv", Body=render(_rows(specs), "csv"))
    run_poll_pass(deps)
    loop.sandbox.connector_poll()
    loop.s3.delete_object(Bucket=BUCKET, Key="usage/b.csv")
    _flush(loop)
    worker = InboxWorker(loop.engine, loop.settings)
    for _ in range(3):
        worker.drain()
    loop.sandbox.connector_poll()
    with loop.session() as session:
        tasks = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).all()
        reports = session.exec(select(ErrorReport)).all()
    states = [(t.status, t.outcome) for t in tasks] + [r.status for r in reports]
    billed = sorted(loop.accepted())
    assert billed == ["a0-mfx1", "a1-mfx1", "a2-mfx1", "a3-mfx1", "c0-mfx1", "c1-mfx1"], (
        billed,
        states,
    )
    assert [r.status for r in reports] == ["partial"], states
