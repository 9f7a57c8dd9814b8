"""MFX_POLLER=index end to end: Stripe's S3 connector (the sandbox) imports the bucket,
meterfix only indexes identifier -> (object, row) and remediates what Stripe rejects.

The sandbox's connector routes rejected rows as Stripe's S3 guide does: format
problems (a value that is not a number, a mandatory field without a value) come back in the
import set's failed-records file; data problems (unknown customer or event name, a timestamp
outside Stripe's window) as thin `v1.billing.meter.*` events that sample only a few
identifiers. meterfix must link the samples to the indexed object and remediate every row of
it with a reported code.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlmodel import select

from sandbox.reports import SAMPLES_PER_CODE
from service.commands.poll import _echo as echo
from service.config import PollerMode, Settings
from service.models import Alert, ErrorReport, InboxEvent, QuarantinedRow, RemediationRun
from service.poller.passes import PollerDeps, build_poller_deps, run_poll_pass
from service.runtime import Runtime
from tests.integration.test_e2e import BUCKET, RULES, Loop, render, running_loop

DAY = 86_400
MAPPED = [f"acme{i}" for i in range(1, 6)]  # customer "acme-42": mapped by the rules
CASED = [f"case{i}" for i in range(1, 6)]  # event name "API-Requests": case differs
assert len(MAPPED) > SAMPLES_PER_CODE and len(CASED) > SAMPLES_PER_CODE


def index_rows(now: int) -> list[dict[str, Any]]:
    """Valid rows, format problems (in the failed-records file: `thou`, `text`) and data
    problems (reported asynchronously, a few samples each: every other bad row)."""
    base = {"event_name": "api_requests", "customer": "cus_alice", "value": "5", "timestamp": now}
    rows: list[dict[str, Any]] = [
        {"identifier": "ok1"},
        {"identifier": "ok2", "customer": "cus_bob", "value": "7"},
        {"identifier": "ghost", "customer": "ghost-9"},  # unknown, unmapped: quarantine
        {"identifier": "ms", "timestamp": (now - 7200) * 1000},  # milliseconds
        {"identifier": "thou", "value": "1,234"},
        {"identifier": "text", "value": "abc"},  # quarantine
        {"identifier": "old", "timestamp": now - 40 * DAY},  # quarantine
    ]
    rows += [{"identifier": i, "customer": "acme-42"} for i in MAPPED]
    rows += [{"identifier": i, "event_name": "API-Requests"} for i in CASED]
    return [{**base, **row} for row in rows]


RECOVERED = {"ok1", "ok2"} | {f"{i}-mfx1" for i in ["ms", "thou", *MAPPED, *CASED]}
QUARANTINED = {
    "ghost": "meter_event_customer_not_found",
    "text": "meter_event_invalid_value",
    "old": "timestamp_too_far_in_past",
}


@pytest.fixture
def loop(
    db_url: str,
    s3_endpoint: str,
    tmp_path: Path,
    make_app: Callable[[Settings], Flask],
) -> Iterator[Loop]:
    with running_loop(
        db_url, s3_endpoint, tmp_path, make_app, poller=PollerMode.INDEX, data_errors="report"
    ) as running:
        yield running


@pytest.fixture
def deps(loop: Loop) -> Iterator[PollerDeps]:
    runtime = Runtime(loop.settings)
    try:
        yield build_poller_deps(runtime)
    finally:
        runtime.close()


def _flush(loop: Loop) -> list[dict[str, Any]]:
    return list(loop.sandbox_app.extensions["sandbox"].flush_reports())


def _sampled(events: list[dict[str, Any]]) -> set[str]:
    return {
        str(sample["request"]["identifier"])
        for event in events
        for error_type in event["data"]["reason"]["error_types"]
        for sample in error_type["sample_errors"]
    }


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_index_mode_remediates_every_reported_row(loop: Loop, deps: PollerDeps, fmt: str) -> None:
    loop.s3.put_object(
        Bucket=BUCKET, Key=f"usage/2026-11-25.{fmt}", Body=render(index_rows(int(time.time())), fmt)
    )
    report = run_poll_pass(deps)  # meterfix indexes the object; it sends nothing
    assert (report.mode, report.indexed, report.sent) == ("index", 1, 0), report
    events = loop.sandbox.connector_poll()  # Stripe imports: 2 format errors in a file
    assert [e["type"] for e in events] == ["data_management.import_set.succeeded"]
    assert events[0]["data"]["object"]["result"]["errors"]["row_count"] == 2
    assert sorted(loop.accepted()) == ["ok1", "ok2"]
    reports = _flush(loop)  # 13 data errors, only a few sampled
    assert sorted(e["type"] for e in reports) == [
        "v1.billing.meter.error_report_triggered",
        "v1.billing.meter.no_meter_found",
    ]
    counts = {
        t["code"]: t["error_count"] for e in reports for t in e["data"]["reason"]["error_types"]
    }
    assert counts == {
        "meter_event_customer_not_found": 1 + len(MAPPED),
        "timestamp_in_future": 1,
        "timestamp_too_far_in_past": 1,
        "no_meter": len(CASED),
    }
    assert not set(MAPPED + CASED) <= _sampled(reports), "remediation must go beyond samples"
    loop.drain()  # failed-records file + both reports: corrected files into the bucket
    loop.sandbox.connector_poll()  # Stripe imports the corrected files
    _assert_outcome(loop)
    _assert_repeat_changes_nothing(loop, deps)


@pytest.mark.parametrize("hours", [0, 25])
def test_reports_that_come_before_the_poller_indexed_their_object_are_remediated_once_it_does(
    loop: Loop, deps: PollerDeps, hours: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stripe's connector took the object and reported its rows before the poller's next pass
    (its interval, a long pass over other files): no sample was a row of ours yet, so both
    reports were kept `unmatched` and never remediated (usage lost). The pass
    that indexes the object links their samples and queues their remediation; not for
    reports that came more than a day before (`LATE_MATCH`: no report is about rows taken
    that long before it)."""
    loop.s3.put_object(
        Bucket=BUCKET, Key="usage/2026-11-25.csv", Body=render(index_rows(int(time.time())), "csv")
    )
    loop.sandbox.connector_poll()  # Stripe imports before meterfix indexed the object
    assert len(_flush(loop)) == 2
    loop.drain()  # the failed-records file is remediated; the reports match nothing yet
    with loop.session() as session:
        reports = session.exec(select(ErrorReport)).all()
        tasks = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).all()
        assert [t.event_type for t in tasks] == ["meterfix.remediate.import_set_errors"]
        assert [r.status for r in reports] == ["unmatched", "unmatched"]
        warned = session.exec(select(Alert).where(Alert.kind == "error_report.unmatched")).all()
        assert sorted(a.status for a in warned) == ["open", "open"]  # a meter's, no meter's
        for report in reports:  # came `hours` ago
            report.created_at = report.created_at - timedelta(hours=hours)
            session.add(report)
        session.commit()
    report = run_poll_pass(deps)
    # the object, and the failed-records run's corrected file
    assert (report.indexed, report.reports_matched) == (2, 0 if hours else 2), report
    echo(report)  # what `meterfix poll` prints
    said = "2 error reports that came before their rows were recorded queued for remediation"
    assert (said in capsys.readouterr().out) == (not hours)
    loop.drain()  # both reports' runs
    with loop.session() as session:
        warned = session.exec(select(Alert).where(Alert.kind == "error_report.unmatched")).all()
    assert {a.status for a in warned} == {"open" if hours else "resolved"}
    if hours:
        with loop.session() as session:
            statuses = [r.status for r in session.exec(select(ErrorReport)).all()]
        assert statuses == ["unmatched", "unmatched"]
        return
    loop.sandbox.connector_poll()  # Stripe imports the corrected files
    _assert_outcome(loop)
    _assert_repeat_changes_nothing(loop, deps)


def _assert_outcome(loop: Loop) -> None:
    assert sorted(loop.accepted()) == sorted(RECOVERED), "every recoverable row exactly once"
    with loop.session() as session:
        quarantined = session.exec(select(QuarantinedRow)).all()
        statuses = [r.status for r in session.exec(select(ErrorReport)).all()]
    assert {q.identifier: q.code for q in quarantined} == QUARANTINED
    assert all(q.reason for q in quarantined)
    assert statuses == ["remediated", "remediated"]


def _assert_repeat_changes_nothing(loop: Loop, deps: PollerDeps) -> None:
    before_objects, before_events = loop.objects(), loop.accepted()
    with loop.session() as session:
        runs = len(session.exec(select(RemediationRun)).all())
    run_poll_pass(deps)
    loop.sandbox.connector_poll()
    assert _flush(loop) == []
    loop.drain()
    assert loop.objects() == before_objects
    assert loop.accepted() == before_events
    with loop.session() as session:
        assert len(session.exec(select(RemediationRun)).all()) == runs


def _rows(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base = {"event_name": "api_requests", "customer": "cus_alice", "value": "5"}
    return [{**base, "timestamp": int(time.time()), **spec} for spec in specs]


def _cycles(loop: Loop, deps: PollerDeps, count: int = 3) -> None:
    """Index, Stripe imports, Stripe reports, meterfix remediates; until nothing is left."""
    for _ in range(count):
        run_poll_pass(deps)
        loop.sandbox.connector_poll()
        _flush(loop)
        loop.drain()


def test_row_fixed_for_one_code_and_reported_for_another_is_corrected_again(
    loop: Loop, deps: PollerDeps
) -> None:
    # no_meter first (rerouted to api_requests), then Stripe sees its customer "acme-42"
    specs = [{"identifier": "both", "event_name": "API-Requests", "customer": "acme-42"}]
    loop.s3.put_object(Bucket=BUCKET, Key="usage/both.csv", Body=render(_rows(specs), "csv"))
    _cycles(loop, deps)
    with loop.session() as session:
        quarantined = [q.identifier for q in session.exec(select(QuarantinedRow)).all()]
    assert quarantined == []
    assert loop.accepted() == ["both-mfx2"]


def test_report_rows_in_an_object_with_a_long_key_are_remediated(
    loop: Loop, deps: PollerDeps
) -> None:
    """S3 keys run to 1,024 bytes: the report's run over such an object was keyed
    `error_report:<event id>:<key>`, past its column's 512 characters (PostgreSQL refused the
    run, and the rows were never billed), and so was the alert about the run."""
    key = "usage/" + "k" * 690 + ".csv"
    specs = [{"identifier": i, "customer": "acme-42"} for i in ("l0", "l1", "l2", "l3")]
    loop.s3.put_object(Bucket=BUCKET, Key=key, Body=render(_rows(specs), "csv"))
    _cycles(loop, deps)
    assert sorted(loop.accepted()) == ["l0-mfx1", "l1-mfx1", "l2-mfx1", "l3-mfx1"]
    with loop.session() as session:
        [run] = session.exec(select(RemediationRun)).all()
        statuses = [r.status for r in session.exec(select(ErrorReport)).all()]
    assert run.run_key.startswith("error_report:") and run.run_key.endswith(
        ":sha256:" + hashlib.sha256(key.encode()).hexdigest()
    )
    assert (run.source, run.corrected, statuses) == (key, 4, ["remediated"])


def test_report_rows_in_an_object_without_samples_are_remediated(
    loop: Loop, deps: PollerDeps
) -> None:
    for name, ids in (("a", ["a0", "a1", "a2", "a3"]), ("b", ["b0", "b1"])):
        specs = [{"identifier": i, "customer": "acme-42"} for i in ids]
        loop.s3.put_object(Bucket=BUCKET, Key=f"usage/{name}.csv", Body=render(_rows(specs), "csv"))
    _cycles(loop, deps)
    expected = ["a0-mfx1", "a1-mfx1", "a2-mfx1", "a3-mfx1", "b0-mfx1", "b1-mfx1"]
    assert sorted(loop.accepted()) == expected


def test_a_refused_row_fixed_by_hand_before_its_failed_records_were_handled_is_not_corrected(
    loop: Loop, deps: PollerDeps
) -> None:
    """Stripe's connector refused a row (a value written `1,234`: its import set's
    failed-records file); before meterfix handled the file, the customer fixed the row by
    hand and uploaded the file again, and the connector billed it from the new version.
    meterfix then corrected the refused row and sent it as `thou-mfx1`: billed twice."""
    rows = _rows([{"identifier": "ok1"}, {"identifier": "thou", "value": "1,234"}])
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render(rows, "csv"))
    run_poll_pass(deps)
    events = loop.sandbox.connector_poll()  # thou refused: the import set's failed records
    assert events[0]["data"]["object"]["result"]["errors"]["row_count"] == 1
    rows[1]["value"] = "1234"  # fixed by hand, uploaded again before meterfix ran
    time.sleep(1)  # S3 and Stripe stamp whole seconds: uploaded after the import set
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render(rows, "csv"))
    run_poll_pass(deps)
    loop.sandbox.connector_poll()
    assert sorted(loop.accepted()) == ["ok1", "thou"]
    _cycles(loop, deps)
    assert sorted(loop.accepted()) == ["ok1", "thou"]
    with loop.session() as session:
        assert session.exec(select(QuarantinedRow)).all() == []
        [task] = session.exec(
            select(InboxEvent).where(
                InboxEvent.event_type == "meterfix.remediate.import_set_errors"
            )
        ).all()
    assert task.outcome.endswith(
        "; 1 left to Stripe's connector: a version of the file uploaded since holds them"
    )


def test_a_failed_file_fixed_by_hand_and_taken_again_before_meterfix_ran_is_not_sent_again(
    loop: Loop, deps: PollerDeps
) -> None:
    """Stripe's connector failed a whole file (no `event_name` column); before meterfix
    handled the failure, the customer fixed the file and uploaded it again (without one row)
    and the connector billed it. meterfix then re-sent every row of the failed file under
    derived identifiers (`f1-mfx1`): f1 billed twice. A row the new version holds is left to
    the connector; the row it dropped is still re-sent, with the event name the policy
    fills in (its corrected file held no `event_name` column: Stripe failed it as it failed
    the input, and meterfix wrote a new generation of it each time, never billed)."""
    policy = '[policy]\ndefault_event_name = "api_requests"\n'
    Path(loop.settings.mfx_rules).write_text(RULES + policy)
    now = int(time.time()) - 60
    header = "identifier,timestamp,payload_stripe_customer_id,payload_value\n"
    failed = header + f"f1,{now},cus_alice,5\nf2,{now},cus_alice,6\n"
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=failed.encode())
    run_poll_pass(deps)
    events = loop.sandbox.connector_poll()
    assert [e["type"] for e in events] == ["data_management.import_set.failed"]
    time.sleep(1)  # S3 and Stripe stamp whole seconds: uploaded after the import set
    fixed = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
    fixed += f"f1,{now},api_requests,cus_alice,5\n"
    loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=fixed.encode())
    run_poll_pass(deps)
    loop.sandbox.connector_poll()
    assert loop.accepted() == ["f1"]
    _cycles(loop, deps)
    assert sorted(loop.accepted()) == ["f1", "f2-mfx1"]
    [corrected] = [body for key, body in loop.objects().items() if "/corrected/" in key]
    assert corrected.decode().splitlines()[:2] == [
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value",
        f"f2-mfx1,{now},api_requests,cus_alice,6",
    ]  # the event name filled in is written: without it Stripe failed the file again
    with loop.session() as session:
        [task] = session.exec(
            select(InboxEvent).where(
                InboxEvent.event_type == "meterfix.remediate.import_set_failed"
            )
        ).all()
    assert task.outcome is not None
    assert task.outcome.endswith(
        "; 1 left to Stripe's connector: a version of the file uploaded since holds them"
    )
