"""The day's file rewritten in place (the same rows, and more) after the bundled poller sent
it and before Stripe's error report about it came. The report is about rows the first version
sent; the version there now holds them too, and the poller recorded them with the first. The
run took of them only the rows Stripe sampled: the other rows Stripe refused were lost, and
the report was `remediated`. Real sandbox (meter events, error reports), a moto bucket, the
bundled poller (MFX_POLLER=on), both databases."""

# ruff: noqa: F811  (the fixture imported from the module that defines it)
from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine
from sqlmodel import col, select

from service.jobs import error_reports
from service.jobs.report_job import Report
from service.jobs.report_outcome import conclude
from service.models import Alert, ErrorReport, InboxEvent, QuarantinedRow
from service.poller.passes import PollerDeps, build_poller_deps, run_poll_pass
from service.runtime import Runtime
from tests.integration.test_e2e import BUCKET, Loop, loop, render  # noqa: F401 (the fixture)

KEY = "usage/day.csv"


def _rows(now: int, count: int, *, start: int = 0) -> list[dict[str, object]]:
    """Every fifth row of the first 50 names acme-42, a customer Stripe does not know
    (refused; the rules map it to cus_acme); the others cus_bob (billed)."""
    return [
        {
            "identifier": f"d{n}",
            "timestamp": now - 600 - n,
            "event_name": "api_requests",
            "customer": "acme-42" if n % 5 == 0 and n < 50 else "cus_bob",
            "value": str(n + 1),
        }
        for n in range(start, start + count)
    ]


def _sent_then_rewritten(loop: Loop, deps: PollerDeps) -> None:
    """v1 (50 rows, 10 of acme-42) sent; v2 (the same 50 rows and 10 more) uploaded and
    recorded by the poller (which sends only the 10 new rows); then Stripe's report."""
    now = int(time.time())
    first = _rows(now, 50)
    loop.s3.put_object(Bucket=BUCKET, Key=KEY, Body=render(first, "csv"))
    assert run_poll_pass(deps).sent == 50
    time.sleep(1.1)  # S3 stamps whole seconds
    loop.s3.put_object(Bucket=BUCKET, Key=KEY, Body=render(first + _rows(now, 10, start=50), "csv"))
    assert run_poll_pass(deps).left_out == 50  # the rows v1 sent: only the 10 new ones go
    loop.sandbox_app.extensions["sandbox"].flush_reports()  # the report about v1's 10 rows
    loop.drain()


def test_rows_stripe_refused_from_the_version_rewritten_in_place_are_all_corrected(
    loop: Loop,
) -> None:
    runtime = Runtime(loop.settings)
    try:
        deps = build_poller_deps(runtime)
        _sent_then_rewritten(loop, deps)
        run_poll_pass(deps)  # imports the corrected file
        loop.sandbox_app.extensions["sandbox"].flush_reports()
        loop.drain()
    finally:
        runtime.close()

    acme = [f"d{n}" for n in range(0, 50, 5)]
    accepted = loop.accepted()
    assert sorted(i for i in accepted if i.endswith("-mfx1")) == sorted(f"{i}-mfx1" for i in acme)
    # billed once each: v1's 40 rows and v2's 10 new ones, none of them re-sent
    billed = [i for i in accepted if not i.endswith("-mfx1")]
    assert sorted(billed) == sorted(f"d{n}" for n in range(60) if n % 5 or n >= 50)
    with loop.session() as session:
        [report] = session.exec(select(ErrorReport)).all()
        held = session.exec(select(QuarantinedRow)).all()
        partial = session.exec(select(Alert).where(Alert.kind == "error_report.partial")).all()
        [task] = session.exec(
            select(InboxEvent).where(InboxEvent.event_type == "meterfix.remediate.error_report")
        ).all()
    assert (report.error_count, report.status) == (10, "remediated")
    assert held == []
    assert partial == []
    assert task.outcome == "remediated 10 row(s) for 10 reported error(s)"


def test_a_report_whose_rewritten_object_the_poller_records_while_it_runs_is_taken_up_again(
    loop: Loop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The report's task reads the object while the poller has not recorded the version there
    now (`partial`: "the poller has not recorded the version there now ... taken up again when
    it does"), and a poll pass records that version before the task marks the report
    `partial`: the pass found no `partial` report to take up again, and no later pass records
    that version again. The report stayed `partial`, its rows lost. A pass is run here at the
    worst moment: after the task read the bucket, before it concluded."""
    runtime = Runtime(loop.settings)
    try:
        deps = build_poller_deps(runtime)
        now = int(time.time())
        first = _rows(now, 50)
        loop.s3.put_object(Bucket=BUCKET, Key=KEY, Body=render(first, "csv"))
        run_poll_pass(deps)
        time.sleep(1.1)  # S3 stamps whole seconds
        rewritten = render(first + _rows(now, 10, start=50), "csv")
        loop.s3.put_object(Bucket=BUCKET, Key=KEY, Body=rewritten)  # not polled yet
        passes: list[int] = []

        def pass_then_conclude(engine: Engine, job: Report, found: int) -> str:
            if not passes:  # the pass that records the rewritten version, meanwhile
                passes.append(run_poll_pass(deps).reports_matched)
            return conclude(engine, job, found)

        monkeypatch.setattr(error_reports, "conclude", pass_then_conclude)
        loop.sandbox_app.extensions["sandbox"].flush_reports()
        loop.drain()
        assert passes == [0]  # the report was not `partial` yet: the pass did not take it up
        run_poll_pass(deps)  # imports the corrected file
        loop.sandbox_app.extensions["sandbox"].flush_reports()
        loop.drain()
    finally:
        runtime.close()

    acme = [f"d{n}" for n in range(0, 50, 5)]
    accepted = loop.accepted()
    assert sorted(i for i in accepted if i.endswith("-mfx1")) == sorted(f"{i}-mfx1" for i in acme)
    with loop.session() as session:
        [report] = session.exec(select(ErrorReport)).all()
        [alert] = session.exec(select(Alert).where(Alert.kind == "error_report.partial")).all()
    assert (report.status, alert.status) == ("remediated", "resolved")
    assert "overwritten" not in report.detail


def test_rows_an_earlier_report_handled_in_another_object_are_not_this_report_s(
    loop: Loop,
) -> None:
    """ctl.csv's 10 acme-42 rows were refused and corrected for an earlier report. day.csv's
    10 acme-42 rows are refused next, and day.csv is cut to its first 15 rows before the
    report came: 3 of its refused rows are left (the sampled ones). The search around the
    report's window found ctl.csv, and counted its rows the earlier report's run handled as
    this report's: found 13 of 10, `remediated` with the run's info alert (all 3 rows
    corrected), no warning, 7 rows lost. They were not taken again since: not this report's,
    which is `partial`."""
    runtime = Runtime(loop.settings)
    try:
        deps = build_poller_deps(runtime)
        now = int(time.time())
        acme = [row for row in _rows(now, 50) if row["customer"] == "acme-42"]
        control = [{**row, "identifier": f"c{row['identifier']}"} for row in acme]
        loop.s3.put_object(Bucket=BUCKET, Key="usage/ctl.csv", Body=render(control, "csv"))
        run_poll_pass(deps)
        loop.sandbox_app.extensions["sandbox"].flush_reports()  # the report about ctl.csv
        loop.drain()
        run_poll_pass(deps)  # imports the corrected file
        loop.s3.put_object(Bucket=BUCKET, Key=KEY, Body=render(_rows(now, 50), "csv"))
        run_poll_pass(deps)
        time.sleep(1.1)  # S3 stamps whole seconds
        loop.s3.put_object(Bucket=BUCKET, Key=KEY, Body=render(_rows(now, 15), "csv"))
        run_poll_pass(deps)  # records the cut version (it sends nothing)
        loop.sandbox_app.extensions["sandbox"].flush_reports()  # the report about day.csv
        loop.drain()
    finally:
        runtime.close()

    with loop.session() as session:
        first, second = session.exec(select(ErrorReport).order_by(ErrorReport.id)).all()
        [alert] = session.exec(select(Alert).where(Alert.kind == "error_report.partial")).all()
        [task, _] = session.exec(
            select(InboxEvent)
            .where(InboxEvent.event_type == "meterfix.remediate.error_report")
            .order_by(col(InboxEvent.id).desc())
        ).all()
    assert (first.error_count, first.status) == (10, "remediated")
    assert (second.error_count, second.status) == (10, "partial")
    assert task.outcome == "partial: remediated 3 row(s) of 10 reported"
    assert (alert.detail["found"], alert.detail["expected"]) == (3, 10)
    assert alert.subject == f"report {second.event_id}: found 3 of 10 reported rows"


def test_rows_the_first_version_sent_before_a_sampled_row_of_the_next_are_the_report_s(
    loop: Loop,
) -> None:
    """v1 of day.csv (50 rows, 10 of acme-42) sent: 40 billed, 10 refused. v2 holds them and
    d50 of acme-42, refused too; Stripe's report of the 11 samples d50 (the sandbox's queue
    reordered: Stripe samples which rows it pleases) with d0 and d5. The rows v1 sent were
    kept only when sent no earlier than the latest sampled row (SentInWindow: a `cus_…`
    customer may have been deleted in between, a row sent before billed), one time for the
    whole report: d10 to d45 were left, 8 of 11 lost, the report `partial`. acme-42 never names
    a Stripe customer: the bound is a `cus_…` customer's, whose sampled row Stripe did not
    find."""
    runtime = Runtime(loop.settings)
    try:
        deps = build_poller_deps(runtime)
        now = int(time.time())
        first = _rows(now, 50)
        loop.s3.put_object(Bucket=BUCKET, Key=KEY, Body=render(first, "csv"))
        assert run_poll_pass(deps).sent == 50
        time.sleep(1.1)  # S3 stamps whole seconds
        added = [{**_rows(now, 1, start=50)[0], "customer": "acme-42"}]
        loop.s3.put_object(Bucket=BUCKET, Key=KEY, Body=render(first + added, "csv"))
        assert run_poll_pass(deps).left_out == 50  # the rows v1 sent: only d50 goes
        sandbox = loop.sandbox_app.extensions["sandbox"]
        with sandbox.state.lock:  # d50 first: among the rows the report samples
            sandbox.state.pending_errors.sort(key=lambda error: error.identifier != "d50")
        [report] = sandbox.flush_reports()
        samples = report["data"]["reason"]["error_types"][0]["sample_errors"]
        assert [s["request"]["identifier"] for s in samples] == ["d50", "d0", "d5"]
        loop.drain()
        run_poll_pass(deps)  # imports the corrected file
        sandbox.flush_reports()
        loop.drain()
    finally:
        runtime.close()

    acme = [f"d{n}" for n in range(0, 51, 5)]
    accepted = loop.accepted()
    assert sorted(i for i in accepted if i.endswith("-mfx1")) == sorted(f"{i}-mfx1" for i in acme)
    billed = [i for i in accepted if not i.endswith("-mfx1")]
    assert sorted(billed) == sorted(f"d{n}" for n in range(50) if n % 5)
    with loop.session() as session:
        [report_row] = session.exec(select(ErrorReport)).all()
        partial = session.exec(select(Alert).where(Alert.kind == "error_report.partial")).all()
    assert (report_row.error_count, report_row.status) == (11, "remediated")
    assert partial == []
