"""An error report counts more errors than its samples lead to, so meterfix searches the other
objects it saw around the report's window (MFX_POLLER=index: Stripe's S3 connector, the
sandbox, imports the bucket). Only rows Stripe must have refused WHENEVER it took their object
may be re-sent: an object Stripe billed before its meter was archived holds rows that fail our
validation today (`archived_meter`), and re-sending them to the successor meter bills them
twice."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import stripe
from sqlmodel import Session, col, select

from sandbox.defaults import SANDBOX_API_KEY
from sandbox.events import build_error_report_event
from service.jobs import runs as job_runs
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.models import (
    Alert,
    BucketObject,
    CorrectionAudit,
    ErrorReport,
    ImportedRow,
    InboxEvent,
    QuarantinedRow,
    RemediationRun,
)
from service.poller.passes import PollerDeps, run_poll_pass
from service.web.actions import Actor, queue_rerun
from service.worker import inbox, inbox_claims
from tests.integration import test_e2e_index
from tests.integration.test_billing_safety import (
    assert_only_the_new_row_was_mapped,
    originals_billed,
)
from tests.integration.test_e2e import BUCKET, RULES, Loop, render
from tests.integration.test_remediation_tasks import (  # noqa: F401 (the fixture)
    Service,
    _etag,
    service,
)

# MFX_POLLER=index: Stripe's S3 connector (the sandbox) imports, meterfix indexes
loop, deps = test_e2e_index.loop, test_e2e_index.deps


def _rows(identifiers: list[str]) -> bytes:
    now = int(time.time())
    return render(
        [
            {
                "identifier": identifier,
                "timestamp": now - 60,
                "event_name": "api_requests",
                "customer": "cus_alice",
                "value": "5",
            }
            for identifier in identifiers
        ],
        "csv",
    )


def _cycle(loop: Loop, deps: PollerDeps) -> None:
    """Index, Stripe imports, Stripe reports, meterfix remediates."""
    run_poll_pass(deps)
    loop.sandbox.connector_poll()
    loop.sandbox_app.extensions["sandbox"].flush_reports()
    loop.drain()


def test_rows_billed_before_their_meter_was_archived_are_not_sent_again(
    loop: Loop, deps: PollerDeps
) -> None:
    Path(loop.settings.mfx_rules).write_text(
        RULES + '[meter_successors]\n"api_requests" = "api_v2"\n'
    )
    loop.sandbox.create_meter("api_v2")
    early = [f"e{n}" for n in range(5)]
    loop.s3.put_object(Bucket=BUCKET, Key="usage/early.csv", Body=_rows(early))
    _cycle(loop, deps)
    assert sorted(loop.accepted()) == early  # billed on api_requests

    time.sleep(1.1)  # the meter is archived after the early object was uploaded (whole seconds)
    [meter] = [m for m in loop.sandbox.meters() if m["event_name"] == "api_requests"]
    loop.sandbox.deactivate_meter(meter["id"])
    late = [f"l{n}" for n in range(4)]
    loop.s3.put_object(Bucket=BUCKET, Key="usage/late.csv", Body=_rows(late))
    client = stripe.StripeClient(SANDBOX_API_KEY, base_addresses={"api": loop.sandbox.base_url})
    for identifier in ("direct1", "direct2"):  # sent by the customer's app, not through files
        client.v1.billing.meter_events.create(
            {
                "event_name": "api_requests",
                "identifier": identifier,
                "payload": {"stripe_customer_id": "cus_alice", "value": "1"},
            }
        )
    _cycle(loop, deps)  # one report: 6 archived_meter errors, 3 samples, all from late.csv
    loop.sandbox.connector_poll()  # Stripe imports the corrected files

    accepted = sorted(loop.accepted())
    assert accepted == sorted([*early, *(f"{i}-mfx1" for i in late)])
    assert max(originals_billed(loop).values()) == 1
    with loop.session() as session:
        [report] = session.exec(select(ErrorReport)).all()
        alerts = session.exec(select(Alert).where(Alert.kind == "error_report.partial")).all()
    assert report.status == "partial"  # 4 of 6 found: the 2 direct events are not in a file
    assert [alert.detail for alert in alerts] == [
        {"event_id": report.event_id, "found": 4, "expected": 6}
    ]


ARCHIVED_OBJECT = (
    "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
    + "".join(f"q{n},{{now}},api_requests,cus_1,{n}\n" for n in range(1, 5))
)


@pytest.mark.parametrize(
    ("first_sent", "rerouted"),
    [
        # the bundled poller sent the object's batches from ten minutes before the meter was
        # archived: q1 and q2 may have been billed; only the sampled rows go to the successor
        (-600, ["q3", "q4"]),
        # Stripe's S3 connector took the object at once, in the report's window: every row of
        # the archived meter was refused, as its sampled rows were
        (None, ["q1", "q2", "q3", "q4"]),
    ],
)
def test_a_sampled_archived_meter_speaks_for_the_rows_stripe_took_with_it(
    service: Service,  # noqa: F811 (the fixture imported above)
    first_sent: int | None,
    rerouted: list[str],
) -> None:
    admin = service.sandbox.admin
    admin.create_meter("api_v2")
    [meter] = [m for m in admin.meters() if m["event_name"] == "api_requests"]
    archived_at = admin.deactivate_meter(meter["id"])["status_transitions"]["deactivated_at"]
    Path(service.settings.mfx_rules).write_text('[meter_successors]\n"api_requests" = "api_v2"\n')
    bucket = Path(service.settings.bucket_url.removeprefix("file://"))
    bucket.mkdir(parents=True, exist_ok=True)
    (bucket / "q.csv").write_text(ARCHIVED_OBJECT.format(now=int(time.time()) - 60))
    sent = None if first_sent is None else datetime.fromtimestamp(archived_at + first_sent, UTC)
    etag = _etag(service, "q.csv")
    with Session(service.engine) as session:  # what the poller recorded for q.csv
        session.add(
            BucketObject(
                key="q.csv",
                etag=etag,
                size=10,
                status="indexed" if sent is None else "imported",
                last_modified=datetime.fromtimestamp(archived_at - 900, UTC),
                first_sent_at=sent,
            )
        )
        for n in range(1, 5):
            row = ImportedRow(identifier=f"q{n}", object_key="q.csv", etag=etag, row_number=n)
            session.add(row)
        session.commit()
    samples = [("archived_meter", "meter is inactive", f"q{n}") for n in (3, 4)]
    service.deliver(build_error_report_event(meter["id"], samples))
    service.drain()

    audit = service.rows(CorrectionAudit)
    assert sorted(a.identifier for a in audit if a.field == "event_name") == rerouted
    assert {a.after for a in audit if a.field == "event_name"} == {"api_v2"}
    assert [r.status for r in service.rows(ErrorReport)] == ["remediated"]


def test_a_report_about_a_new_version_of_an_object_skips_only_rows_of_that_version_handled(
    loop: Loop, deps: PollerDeps
) -> None:
    """Rows an earlier run over the same object handled are skipped, so no row is sent twice;
    but an object overwritten under the same key is another file: its row 2 is not the row 2
    a run corrected in the version before (it was skipped: usage lost)."""
    now = int(time.time())
    base = {"timestamp": now - 60, "event_name": "api_requests", "value": "5"}

    def version(prefix: str) -> bytes:
        customers = ("cus_alice", "acme-42", "cus_bob")  # acme-42: mapped by the rules
        rows = [
            {**base, "identifier": f"{prefix}{n}", "customer": customer}
            for n, customer in enumerate(customers, start=1)
        ]
        return render(rows, "csv")

    loop.s3.put_object(Bucket=BUCKET, Key="usage/latest.csv", Body=version("a"))
    _cycle(loop, deps)
    loop.s3.put_object(Bucket=BUCKET, Key="usage/latest.csv", Body=version("b"))  # overwritten
    _cycle(loop, deps)
    loop.sandbox.connector_poll()  # Stripe imports the corrected files
    assert sorted(loop.accepted()) == ["a1", "a2-mfx1", "a3", "b1", "b2-mfx1", "b3"]
    with loop.session() as session:
        statuses = [report.status for report in session.exec(select(ErrorReport)).all()]
    assert statuses == ["remediated", "remediated"]


def test_a_report_about_an_object_overwritten_since_stripe_took_it_reads_no_other_version(
    loop: Loop, deps: PollerDeps
) -> None:
    """The report is about the version Stripe took; the bucket holds another under the key
    now. Its rows are another file's: remediating them for this report counted them as the
    reported rows and marked the report remediated, while the reported row was lost."""
    now = int(time.time())
    base = {"event_name": "api_requests", "customer": "cus_alice", "value": "5"}

    def version(prefix: str) -> bytes:
        rows = [
            {**base, "identifier": f"{prefix}1", "timestamp": now - 60},
            {**base, "identifier": f"{prefix}2", "timestamp": (now - 60) * 1000},  # ms
        ]
        return render(rows, "csv")

    loop.s3.put_object(Bucket=BUCKET, Key="usage/latest.csv", Body=version("a"))
    run_poll_pass(deps)
    loop.sandbox.connector_poll()  # Stripe takes version a: a2 is refused
    loop.s3.put_object(Bucket=BUCKET, Key="usage/latest.csv", Body=version("b"))  # overwritten
    loop.sandbox_app.extensions["sandbox"].flush_reports()  # the report about a2
    loop.drain()

    with loop.session() as session:
        [report] = session.exec(select(ErrorReport)).all()
        runs = session.exec(select(RemediationRun)).all()
        [alert] = session.exec(select(Alert).where(Alert.kind == "error_report.partial")).all()
    assert report.status == "partial"
    assert [run.run_key for run in runs if run.run_key.startswith("error_report:")] == []
    assert alert.detail == {
        "event_id": report.event_id,
        "found": 0,
        "expected": 1,
        "changed": ["usage/latest.csv"],
    }
    assert "overwritten since Stripe took them" in alert.message
    # the pass that records version b takes the report up again: b does not hold a2
    assert run_poll_pass(deps).reports_matched == 1
    loop.drain()
    assert run_poll_pass(deps).reports_matched == 0  # not again
    with loop.session() as session:
        [report] = session.exec(select(ErrorReport)).all()
        [alert] = session.exec(select(Alert).where(Alert.kind == "error_report.partial")).all()
        runs = session.exec(select(RemediationRun)).all()
    assert (report.status, alert.status) == ("partial", "open")
    assert "overwritten" not in report.detail
    assert [run.run_key for run in runs if run.run_key.startswith("error_report:")] == []


def test_a_report_about_a_version_rewritten_before_the_poller_listed_it_is_taken_up_again(
    loop: Loop, deps: PollerDeps
) -> None:
    """The day's file is written again with the rows so far and one more before Stripe's
    report about its first version came, and before the poller's next pass: the version in
    the bucket was not recorded yet, so the report was `partial` ("overwritten since Stripe
    took them"), its rows left unremediated until someone replayed it. The pass that indexes
    the new version takes the report up again: it reads the rows from that version (they are
    the rows Stripe refused, unchanged), corrects `a2`, and resolves the partial alert."""
    now = int(time.time())
    base = {"event_name": "api_requests", "customer": "cus_alice", "value": "5"}
    rows = [
        {**base, "identifier": "a1", "timestamp": now - 60},
        {**base, "identifier": "a2", "timestamp": (now - 60) * 1000},  # ms
    ]
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render(rows, "csv"))
    run_poll_pass(deps)
    loop.sandbox.connector_poll()  # Stripe takes version 1: a2 is refused
    time.sleep(1.1)  # S3 stamps whole seconds
    rows.append({**base, "identifier": "a3", "timestamp": now - 30})
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render(rows, "csv"))
    loop.sandbox_app.extensions["sandbox"].flush_reports()  # the report about a2
    loop.drain()
    with loop.session() as session:
        [report] = session.exec(select(ErrorReport)).all()
    assert report.status == "partial"
    assert run_poll_pass(deps).reports_matched == 1
    loop.drain()
    loop.sandbox.connector_poll()  # Stripe imports version 2 (a3; a1, a2 deduped) and a2-mfx1
    assert sorted(loop.accepted()) == ["a1", "a2-mfx1", "a3"]
    with loop.session() as session:
        [report] = session.exec(select(ErrorReport)).all()
        [alert] = session.exec(select(Alert).where(Alert.kind == "error_report.partial")).all()
        [task] = session.exec(
            select(InboxEvent).where(InboxEvent.event_type == "meterfix.remediate.error_report")
        ).all()
    assert report.status == "remediated"
    assert alert.status == "resolved"
    assert task.outcome == "remediated 1 row(s) for 1 reported error(s)"


def test_a_sampled_row_both_versions_of_an_object_hold_is_read_from_the_one_in_the_bucket(
    loop: Loop, deps: PollerDeps
) -> None:
    now = int(time.time())
    base = {"event_name": "api_requests", "customer": "cus_alice", "value": "5"}
    sampled = {**base, "identifier": "s", "timestamp": (now - 60) * 1000}  # ms: refused

    def version(first: str) -> bytes:
        return render([{**base, "identifier": first, "timestamp": now - 60}, sampled], "csv")

    loop.s3.put_object(Bucket=BUCKET, Key="usage/latest.csv", Body=version("a1"))
    run_poll_pass(deps)
    loop.sandbox.connector_poll()  # Stripe takes the first version: s is refused
    loop.s3.put_object(Bucket=BUCKET, Key="usage/latest.csv", Body=version("b1"))
    run_poll_pass(deps)  # meterfix indexes the second version too: s is in both
    loop.sandbox_app.extensions["sandbox"].flush_reports()
    loop.drain()
    loop.sandbox.connector_poll()  # Stripe takes the second version and the corrected file

    assert sorted(loop.accepted()) == ["a1", "b1", "s-mfx1"]
    with loop.session() as session:
        [report] = session.exec(select(ErrorReport)).all()
    assert report.status == "remediated"


def test_a_row_a_run_corrected_in_one_version_is_not_corrected_again_in_the_next(
    loop: Loop, deps: PollerDeps
) -> None:
    """A row an earlier run over the object corrected is skipped by its identifier, wherever
    the next version holds it: `s` moved from row 2 to row 1 when the object was overwritten,
    Stripe refused it again, and a second correction sent `s-mfx1` again (billed twice once
    Stripe's 24-hour dedupe window has passed)."""
    now = int(time.time())
    base = {"event_name": "api_requests", "customer": "cus_alice", "value": "5"}
    sampled = {**base, "identifier": "s", "timestamp": (now - 60) * 1000}  # ms: refused

    def row(identifier: str) -> dict[str, object]:
        return {**base, "identifier": identifier, "timestamp": now - 60}

    loop.s3.put_object(
        Bucket=BUCKET, Key="usage/latest.csv", Body=render([row("a1"), sampled], "csv")
    )
    _cycle(loop, deps)  # Stripe refuses s; meterfix corrects it
    loop.sandbox.connector_poll()  # Stripe imports the corrected file: s-mfx1 billed
    assert sorted(loop.accepted()) == ["a1", "s-mfx1"]

    body = render([sampled, row("b1")], "csv")  # s moved to row 1
    loop.s3.put_object(Bucket=BUCKET, Key="usage/latest.csv", Body=body)
    _cycle(loop, deps)  # Stripe refuses s again
    loop.sandbox.connector_poll()

    with loop.session() as session:
        audit = session.exec(select(CorrectionAudit)).all()
        reports = session.exec(select(ErrorReport)).all()
        alerts = session.exec(select(Alert).where(Alert.kind == "error_report.partial")).all()
    assert [(a.identifier, a.new_identifier) for a in audit] == [("s", "s-mfx1")]
    assert sorted(loop.accepted()) == ["a1", "b1", "s-mfx1"]
    assert loop.sandbox.duplicates() == []  # nothing meterfix sent twice
    # the second report's row was handled before: counted found, no alert about lost rows
    assert [r.status for r in reports] == ["remediated", "remediated"]
    assert alerts == []


def test_a_report_run_done_again_after_a_crash_selects_its_own_rows_again(
    loop: Loop, deps: PollerDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report's run that crashed after loading its audit (before it was recorded done) is
    done again, its first try's rows deleted: they counted as handled by another run, so the
    second try selected none of them, and the audit lost its corrections and the report
    said rows were missing."""
    now = int(time.time())
    base = {"event_name": "api_requests", "customer": "cus_alice", "value": "5"}
    rows = [
        {**base, "identifier": "a1", "timestamp": now - 60},
        *({**base, "identifier": f"s{n}", "timestamp": (now - 60) * 1000} for n in (1, 2)),
    ]
    loop.s3.put_object(Bucket=BUCKET, Key="usage/latest.csv", Body=render(rows, "csv"))
    run_poll_pass(deps)
    loop.sandbox.connector_poll()  # Stripe refuses s1 and s2
    loop.sandbox_app.extensions["sandbox"].flush_reports()

    crashes = []

    def crashing(*args: object, **kwargs: object) -> None:
        crashes.append(args[1])
        raise RuntimeError("worker killed before the run was recorded done")

    with monkeypatch.context() as patch:
        patch.setattr(job_runs, "finish_run", crashing)
        first = loop.worker().drain()
    assert len(crashes) == 1 and len(first.retrying) == 1
    with loop.session() as session:  # the first try's audit was loaded
        assert sorted(a.identifier or "" for a in session.exec(select(CorrectionAudit))) == [
            "s1",
            "s2",
        ]
    later = datetime.now(UTC) + timedelta(hours=1)
    monkeypatch.setattr(inbox, "utcnow", lambda: later)
    monkeypatch.setattr(inbox_claims, "utcnow", lambda: later)
    loop.drain()
    loop.sandbox.connector_poll()  # Stripe imports the corrected file

    with loop.session() as session:
        audit = session.exec(select(CorrectionAudit)).all()
        [report] = session.exec(select(ErrorReport)).all()
        alerts = session.exec(select(Alert).where(Alert.kind == "error_report.partial")).all()
    assert sorted((a.identifier, a.new_identifier) for a in audit) == [
        ("s1", "s1-mfx1"),
        ("s2", "s2-mfx1"),
    ]
    assert (report.status, alerts) == ("remediated", [])
    assert sorted(loop.accepted()) == ["a1", "s1-mfx1", "s2-mfx1"]


def test_rows_an_earlier_version_held_are_not_taken_for_a_report_about_the_next(
    loop: Loop, deps: PollerDeps
) -> None:
    """Index mode: the day's file rewritten with a new row first. Stripe's connector takes the
    new version whole; the rows the first version held were billed with it (and are deduped
    now). Its new row is refused: its customer was deleted in between. A customer Stripe did
    not find speaks for every row of the version taken with it, but the rows of the first
    version are the first version's: taken for the report, the rules' mapping re-sent them to
    another customer (billed twice)."""
    now = int(time.time())
    Path(loop.settings.mfx_rules).write_text(RULES + '"cus_gone" = "cus_alice"\n')
    loop.sandbox.create_customer("cus_gone")
    base = {"event_name": "api_requests", "customer": "cus_gone", "value": "5"}
    old = [{**base, "identifier": f"o{n}", "timestamp": now - 120} for n in range(2)]
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render(old, "csv"))
    _cycle(loop, deps)
    assert sorted(loop.accepted()) == ["o0", "o1"]  # billed
    client = stripe.StripeClient(SANDBOX_API_KEY, base_addresses={"api": loop.sandbox.base_url})
    client.v1.customers.delete("cus_gone")
    new = {**base, "identifier": "n0", "timestamp": now - 60}
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render([new, *old], "csv"))
    _cycle(loop, deps)  # Stripe takes it whole: o0 and o1 deduped, n0 refused
    loop.sandbox.connector_poll()  # the corrected file
    assert_only_the_new_row_was_mapped(loop)


def test_index_mode_says_when_stripe_takes_a_row_meterfix_corrected_again(
    loop: Loop, deps: PollerDeps
) -> None:
    """Stripe refused a row, meterfix corrected it (`x-mfx1` billed), and the customer fixed the
    row in the file and uploaded it again with the others: Stripe's connector bills the fixed
    `x` too (another identifier). meterfix cannot stop it in index mode: an alert says so."""
    now = int(time.time())
    base = {"event_name": "api_requests", "customer": "cus_alice", "value": "5"}
    ok = {**base, "identifier": "a", "timestamp": now - 60}
    broken = {**base, "identifier": "x", "timestamp": (now - 60) * 1000}  # ms: refused
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render([ok, broken], "csv"))
    _cycle(loop, deps)
    loop.sandbox.connector_poll()  # the corrected file
    assert sorted(loop.accepted()) == ["a", "x-mfx1"]
    fixed = {**broken, "timestamp": now - 60}
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render([ok, fixed], "csv"))
    run_poll_pass(deps)

    with loop.session() as session:
        [alert] = session.exec(select(Alert).where(Alert.kind == "poller.taken_again")).all()
    assert (alert.severity, alert.rows) == ("warning", 1)
    assert alert.detail is not None
    assert (alert.detail["corrected"], alert.detail["corrected_identifiers"]) == (1, ["x"])
    assert (alert.detail["rows"], alert.detail["identifiers"]) == (0, [])  # a: the same day
    assert "1 row of it meterfix corrected or re-sent before" in alert.message
    assert alert.subject == "usage/day.csv: 1 row billed before, taken again"


def test_index_mode_leaves_quarantined_rows_stripe_took_again_out_of_a_rerun(
    loop: Loop, deps: PollerDeps
) -> None:
    """Stripe refused a row (a customer it does not know) and meterfix quarantined it; the
    customer fixed the row and uploaded the file again, and Stripe's connector billed it. The
    operator then mapped the old customer and re-ran the quarantine: the row went out a
    second time as `x-mfx1`. Indexing the new version marks the quarantined row as taken
    again; the re-run leaves it, and an alert says so."""
    now = int(time.time())
    base = {"event_name": "api_requests", "value": "5", "timestamp": now - 60}
    ok = {**base, "identifier": "a", "customer": "cus_alice"}
    broken = {**base, "identifier": "x", "customer": "cus_ghost"}
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render([ok, broken], "csv"))
    _cycle(loop, deps)  # x refused by Stripe, quarantined: nothing maps cus_ghost
    with loop.session() as session:
        [held] = session.exec(select(QuarantinedRow)).all()
    assert (held.identifier, held.taken_again) == ("x", None)
    fixed = {**broken, "customer": "cus_alice"}
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render([ok, fixed], "csv"))
    _cycle(loop, deps)  # Stripe takes it whole: a deduped, x billed
    assert sorted(loop.accepted()) == ["a", "x"]

    Path(loop.settings.mfx_rules).write_text(RULES + '"cus_ghost" = "cus_alice"\n')
    queue_rerun(loop.engine, QuarantineFilter(), Actor("api", "127.0.0.1"))
    loop.drain()
    loop.sandbox.connector_poll()
    assert sorted(loop.accepted()) == ["a", "x"]
    with loop.session() as session:
        [held] = session.exec(select(QuarantinedRow)).all()
        [alert] = session.exec(select(Alert).where(Alert.kind == "poller.taken_again")).all()
        version = session.exec(select(BucketObject).order_by(col(BucketObject.id).desc())).first()
    assert version is not None and held.rerun_id is None
    assert held.taken_again is not None
    assert held.taken_again.startswith(f"usage/day.csv (ETag {version.etag}, uploaded ")
    assert (alert.severity, alert.rows) == ("info", 1)
    assert alert.subject == "usage/day.csv: 1 row held in quarantine, taken again"
    assert "a quarantine re-run leaves them" in alert.message


def test_index_mode_says_when_stripe_takes_rows_meterfix_resent_unchanged_again(
    loop: Loop, deps: PollerDeps
) -> None:
    """A whole file failed (`;` between fields, `event` for `event_name`); meterfix repaired
    it and re-sent its rows as `<id>-mfx1` (their amount, under `value`, renamed). The
    customer also fixed the file by hand and uploaded it again: Stripe's connector bills every
    row a second time, and no alert said so."""
    now = int(time.time())
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\n")
    writer.writerow(["identifier", "timestamp", "event", "payload_stripe_customer_id", "value"])
    for identifier in ("a", "b"):
        writer.writerow([identifier, now - 60, "api_requests", "cus_alice", "5"])
    Path(loop.settings.mfx_rules).write_text(RULES + '[columns]\n"event" = "event_name"\n')
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=out.getvalue().encode())
    _cycle(loop, deps)  # Stripe fails the whole file; meterfix repairs it
    _cycle(loop, deps)  # the corrected file, indexed and taken
    assert sorted(loop.accepted()) == ["a-mfx1", "b-mfx1"]
    with loop.session() as session:  # the amount under `value`, renamed: Stripe read none
        audit = session.exec(select(CorrectionAudit)).all()
    assert sorted((a.identifier, a.rule, a.field) for a in audit) == [
        ("a", "rename_key", "payload.value"),
        ("b", "rename_key", "payload.value"),
    ]
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=_rows(["a", "b"]))
    run_poll_pass(deps)

    with loop.session() as session:
        [alert] = session.exec(select(Alert).where(Alert.kind == "poller.taken_again")).all()
    assert (alert.severity, alert.rows) == ("warning", 2)
    assert alert.detail is not None
    assert (alert.detail["corrected"], alert.detail["corrected_identifiers"]) == (2, ["a", "b"])
    assert "2 rows of it meterfix corrected or re-sent before" in alert.message


def _refused_and_reported(
    loop: Loop, deps: PollerDeps, customer: str
) -> tuple[dict[str, object], dict[str, object]]:
    """The day's file: `a` (cus_alice) and `x` of `customer`, which Stripe does not know. The
    connector bills a and refuses x; Stripe sends its report, not handled yet; a second
    passes, so a version uploaded next is uploaded after the report's window. (a, x)"""
    base = {"event_name": "api_requests", "value": "5", "timestamp": int(time.time()) - 60}
    ok = {**base, "identifier": "a", "customer": "cus_alice"}
    refused = {**base, "identifier": "x", "customer": customer}
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render([ok, refused], "csv"))
    run_poll_pass(deps)
    loop.sandbox.connector_poll()
    loop.sandbox_app.extensions["sandbox"].flush_reports()
    time.sleep(1.1)  # S3 keeps whole seconds
    return ok, refused


def test_index_mode_leaves_a_row_fixed_before_its_report_came_to_stripes_connector(
    loop: Loop, deps: PollerDeps
) -> None:
    """Stripe's connector took a row and refused it (a customer it does not know); before
    the report came, the customer fixed the row and uploaded the file again, with a new row of
    the right customer after it. The report read the fixed row from the new version and
    quarantined it for the old row's code, and took the new row for a row of the customer
    Stripe did not know (quarantined too: a re-run mapping the customer would bill both
    twice). The connector takes the new version itself: both are left to it."""
    ok, broken = _refused_and_reported(loop, deps, "cus_ghost")
    fixed = {**broken, "customer": "cus_alice"}
    new = {**ok, "identifier": "b"}
    body = render([ok, fixed, new], "csv")
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=body)
    _cycle(loop, deps)
    with loop.session() as session:
        held = session.exec(select(QuarantinedRow)).all()
        [report] = session.exec(select(ErrorReport)).all()
    assert [q.identifier for q in held] == []
    assert report.status == "remediated"
    assert sorted(loop.accepted()) == ["a", "b", "x"]  # x as fixed, by the connector
    assert max(originals_billed(loop).values()) == 1


def test_index_mode_quarantines_a_row_changed_and_refused_again(
    loop: Loop, deps: PollerDeps
) -> None:
    """Stripe's connector refused a row (a customer it does not know) and meterfix quarantined
    it; the customer changed the row, to another customer Stripe does not know, and uploaded
    the file again: the connector refused it again. The second report is about the row as it
    is now: quarantined anew, not left to the connector as a row changed since it was sent."""
    now = int(time.time())
    base = {"event_name": "api_requests", "value": "5", "timestamp": now - 60}
    ok = {**base, "identifier": "a", "customer": "cus_alice"}
    broken = {**base, "identifier": "x", "customer": "cus_ghost"}
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render([ok, broken], "csv"))
    _cycle(loop, deps)  # x refused, quarantined
    changed = {**broken, "customer": "cus_phantom"}
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render([ok, changed], "csv"))
    _cycle(loop, deps)  # x refused again
    with loop.session() as session:
        held = session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).all()
        reports = session.exec(select(ErrorReport)).all()
    assert [(q.identifier, q.customer) for q in held] == [
        ("x", "cus_ghost"),
        ("x", "cus_phantom"),
    ]
    assert [r.status for r in reports] == ["remediated", "remediated"]
    assert sorted(loop.accepted()) == ["a"]


def test_index_mode_leaves_a_row_stripe_took_again_before_its_report_was_handled(
    loop: Loop, deps: PollerDeps
) -> None:
    """Stripe's connector refused a row (a customer it did not know yet). Before the report
    was handled, the customer was created in Stripe and the file uploaded again as it was:
    the connector took the row again and billed it. The report then read the row from the new
    version and, the customer now mapped by a rule, sent it a second time as `x-mfx1` (a
    version uploaded before the row was quarantined is never marked taken again). A row read
    from a version uploaded after the report's window is left to the connector."""
    ok, late = _refused_and_reported(loop, deps, "cus_late")
    loop.sandbox.create_customer("cus_late")
    Path(loop.settings.mfx_rules).write_text(RULES + '"cus_late" = "cus_alice"\n')
    new = {**ok, "identifier": "b"}
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render([ok, late, new], "csv"))
    _cycle(loop, deps)  # x billed from the new version; the report handled
    _cycle(loop, deps)  # a corrected file, if any
    with loop.session() as session:
        held = session.exec(select(QuarantinedRow)).all()
        [report] = session.exec(select(ErrorReport)).all()
        [task] = session.exec(
            select(InboxEvent).where(InboxEvent.event_type == "meterfix.remediate.error_report")
        )
    assert sorted(loop.accepted()) == ["a", "b", "x"]
    assert max(originals_billed(loop).values()) == 1
    assert held == [] and report.status == "remediated"
    assert task.outcome == (
        "remediated 1 row(s) for 1 reported error(s); 1 read from a version uploaded after "
        "the report: taken again by Stripe's connector, left to it"
    )
