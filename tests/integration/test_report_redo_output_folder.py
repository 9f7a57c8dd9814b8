"""An error report's run redone (its try crashed after uploading its corrected object, which
Stripe's connector imported: billed) after the poller indexed a peer of its object, in the same
folder with the same stem (`usage/day.jsonl` beside `usage/day.csv`), in the report's window.
Named again, the run's folder was the peer's kind (`report-E/usage/day.csv/`, `object_tag`),
not its first try's (`report-E/usage/`): the redo's one listing did not see the kept object,
quarantined its rows again and ended done, and a later re-run billed them twice. The run keeps
the folder its first try chose (`RemediationRun.output_tag`) and its redo is refused there
(`OutputKeyTaken`)."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import select

from service.models import ErrorReport, OutputObject, QuarantinedRow, RemediationRun
from service.poller.passes import PollerDeps, run_poll_pass
from service.worker.inbox import requeue
from tests.integration.test_bucket_edges import report_deps, report_loop  # noqa: F401
from tests.integration.test_e2e import BUCKET, Loop, render
from tests.integration.test_e2e_index import _cycles, _rows


def test_a_report_run_redone_after_a_peer_of_its_stem_is_refused_for_its_kept_object(
    report_loop: Loop,  # noqa: F811
    report_deps: PollerDeps,  # noqa: F811
) -> None:
    loop = report_loop
    specs = [{"identifier": i, "customer": "acme-42"} for i in ("c0", "c1")]
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render(_rows(specs), "csv"))
    _cycles(loop, report_deps)  # refused, reported, corrected as c0-mfx1, c1-mfx1: billed
    assert sorted(loop.accepted()) == ["c0-mfx1", "c1-mfx1"]
    with loop.session() as session:
        [run] = session.exec(select(RemediationRun)).all()
        [kept] = [
            o.key
            for o in session.exec(select(OutputObject).where(OutputObject.kind == "corrected"))
        ]
    event_id = run.run_key.split(":")[1]
    assert kept == f"usage/corrected/report-{event_id}/day.corrected.r1.csv"
    # the try crashed after the upload (the run never recorded done); then the poller indexes
    # a peer of the same stem in the report's window
    peer = _rows([{"identifier": "d0", "customer": "cus_alice"}])
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.jsonl", Body=render(peer, "jsonl"))
    run_poll_pass(report_deps)
    with loop.session() as session:
        session.exec(  # type: ignore[call-overload]
            update(RemediationRun)
            .where(RemediationRun.id == run.id)  # type: ignore[arg-type]
            .values(status="running", finished_at=None)
        )
        session.exec(update(ErrorReport).values(status="recorded"))  # type: ignore[call-overload]
        session.commit()
    [meter] = [m for m in loop.sandbox.meters() if m["event_name"] == "api_requests"]
    loop.sandbox.deactivate_meter(meter["id"])  # the redo would quarantine c0 and c1
    assert requeue(loop.engine, f"mfx_task_error_report_{event_id}")
    loop.worker().drain()

    with loop.session() as session:
        redone = session.get(RemediationRun, run.id)
        assert redone is not None
        held = session.exec(select(QuarantinedRow).where(QuarantinedRow.run_id == run.id)).all()
        outputs = session.exec(select(OutputObject).where(OutputObject.run_id == run.id)).all()
    assert redone.status == "failed", (redone.status, redone.error)
    assert redone.error is not None and kept in redone.error
    assert redone.output_tag == f"report-{event_id}"  # the bucket prefix's top: no folder
    assert [(q.identifier, q.code) for q in held] == []  # not waiting for a re-run to bill again
    listed = [(o.kind, o.key, o.uploaded) for o in outputs]
    assert [o for o in listed if o[0] == "corrected"] == [("corrected", kept, False)], listed
    # nothing written in the peer's kind of folder for day.csv; the kept object untouched
    objects = loop.objects()
    assert not [k for k in objects if f"report-{event_id}/day.csv/" in k], sorted(objects)
    assert kept in objects
    assert sorted(loop.accepted()) == ["c0-mfx1", "c1-mfx1"]
