"""Nothing billed twice, on every path that writes corrected objects, judged by what the sandbox
(playing Stripe) accepted: every row is billed at most once, under one identifier.

- `meterfix remediate FILE --upload` on a usage file Stripe already imported in part;
- failed-records files (`import_set.succeeded`) whose rows carry customers' own identifiers
  that merely look like generations (`inv-r7`, `order-r099`);
- a corrected row that fails again with the same code (quarantined, never corrected again);
- the bundled poller's refused rows and an error report re-reading a partly billed object.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import stripe
from flask import Flask
from sqlmodel import col, select

from sandbox.defaults import SANDBOX_API_KEY
from sandbox.events import build_error_report_event
from service.config import Settings
from service.db import make_engine
from service.jobs.object_runs import one_run_an_object
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.models import (
    Alert,
    CorrectionAudit,
    ErrorReport,
    InboxEvent,
    QuarantinedRow,
    RemediationRun,
)
from service.notify.retention import purge_expired
from service.poller.passes import PollerDeps, build_poller_deps, run_poll_pass
from service.poller.retry import find_retry, reopen
from service.runtime import Runtime
from service.web.actions import Actor, queue_rerun
from tests.integration.test_e2e import BUCKET, RULES, Loop, _put, messy_rows, render, running_loop

METERFIX = str(Path(sys.executable).with_name("meterfix"))
HEADER = ["identifier", "timestamp", "event_name", "payload_stripe_customer_id", "payload_value"]


@pytest.fixture
def loop(
    db_url: str, s3_endpoint: str, tmp_path: Path, make_app: Callable[[Settings], Flask]
) -> Iterator[Loop]:
    with running_loop(db_url, s3_endpoint, tmp_path, make_app) as running:
        yield running


def originals_billed(loop: Loop) -> Counter[str]:
    """How often each original row was billed (derived identifiers count for their original)."""
    with loop.session() as session:
        audit = {a.new_identifier: a.identifier for a in session.exec(select(CorrectionAudit))}
    counts: Counter[str] = Counter()
    for identifier in loop.accepted():
        while audit.get(identifier):
            identifier = str(audit[identifier])
        counts[identifier.split("-mfx", 1)[0]] += 1
    return counts


@contextmanager
def bundled_poller(loop: Loop) -> Iterator[PollerDeps]:
    """The bundled poller's dependencies over the loop's settings (import mode)."""
    runtime = Runtime(loop.settings)
    try:
        yield build_poller_deps(runtime)
    finally:
        runtime.close()


def rerun(loop: Loop) -> dict[str, object]:
    """The operator re-runs every quarantined row ("Re-run with current rules"), and the
    worker runs the task."""
    queued = queue_rerun(loop.engine, QuarantineFilter(), Actor("api", "127.0.0.1"))
    loop.drain()
    return queued


def reported(loop: Loop) -> None:
    """Stripe sends its error reports now, and the worker handles them."""
    loop.sandbox_app.extensions["sandbox"].flush_reports()
    loop.drain()


def add_rules(loop: Loop, tables: str) -> None:
    Path(loop.settings.mfx_rules).write_text(RULES + tables)


def a_row_the_poller_refused(
    loop: Loop, deps: PollerDeps
) -> tuple[int, list[object], list[object], list[object]]:
    """The day's file: `a`, and `x` naming no meter (`legacy_calls`). The poller sends `a` and
    refuses `x`; meterfix quarantines it. (now, a's row, x's row, x's row fixed by hand)"""
    now = int(time.time())
    other: list[object] = ["a", now - 60, "api_requests", "cus_alice", "3"]
    row: list[object] = ["x", now - 60, "legacy_calls", "cus_alice", "5"]
    _put(loop, "day.csv", usage_csv([other, row]))
    run_poll_pass(deps)
    loop.drain()
    return now, other, row, [*row[:2], "api_requests", *row[3:]]


def a_row_stripe_refused(loop: Loop, deps: PollerDeps) -> tuple[list[object], list[object]]:
    """The day's file: `a` and `g` (a customer Stripe does not know). The poller sends both;
    Stripe reports `g` and meterfix quarantines it (no rule maps `cus_ghost`): never billed.
    (a's row, g's row)"""
    now = int(time.time())
    other: list[object] = ["a", now - 60, "api_requests", "cus_alice", "3"]
    row: list[object] = ["g", now - 60, "api_requests", "cus_ghost", "5"]
    _put(loop, "day.csv", usage_csv([other, row]))
    run_poll_pass(deps)  # both sent; Stripe reports g
    reported(loop)  # g quarantined: no rule maps cus_ghost
    return other, row


def usage_csv(rows: list[list[object]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return out.getvalue().encode()


def cli_upload(loop: Loop, file: Path, tmp_path: Path) -> dict[str, object]:
    settings = loop.settings
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BUCKET_URL": settings.bucket_url,
        "S3_ENDPOINT_URL": str(settings.s3_endpoint_url),
        "STRIPE_API_KEY": str(settings.stripe_api_key),
        "STRIPE_API_BASE": str(settings.stripe_api_base),
        "MFX_RULES": str(settings.mfx_rules),
        "AWS_DEFAULT_REGION": "us-east-1",
        **{k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
    }
    args = ["remediate", str(file), "--out", str(tmp_path / "out"), "--upload", "--json"]
    proc = subprocess.run(
        [METERFIX, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    summary: dict[str, object] = json.loads(proc.stdout)
    return summary


def test_cli_upload_of_a_usage_file_stripe_imported_in_part(loop: Loop, tmp_path: Path) -> None:
    body = render(messy_rows(int(time.time())), "csv")
    _put(loop, "2026-11-25.csv", body)
    loop.sandbox.connector_poll()  # Stripe imports it: e1 and e8 are billed, the rest fail
    assert sorted(loop.accepted()) == ["e1", "e8"]
    local = tmp_path / "2026-11-25.csv"
    local.write_bytes(body)  # the operator fixes the file by hand with the CLI
    summary = cli_upload(loop, local, tmp_path)
    # e1, e8 (billed) and e6 (its customer only fails at Stripe) pass our validation
    assert (summary["valid"], summary["corrected"], summary["quarantined"]) == (3, 3, 2)
    loop.sandbox.connector_poll()  # Stripe imports the corrected file
    accepted = sorted(loop.accepted())
    assert accepted == ["e1", "e2-mfx1", "e3-mfx1", "e4-mfx1", "e8"]
    assert max(originals_billed(loop).values()) == 1


def test_customers_identifiers_are_corrected_and_billed_once(loop: Loop) -> None:
    now = int(time.time())
    names = ["inv-r7", "x-r1000", "plain-r1", "order-r099", "order-r100", "order-r1", "order-r01"]
    rows = [[name, (now - 60) * 1000, "api_requests", "cus_alice", "5"] for name in names]
    rows.append(["ok", now - 60, "api_requests", "cus_alice", "5"])
    _put(loop, "ids.csv", usage_csv(rows))
    loop.sandbox.connector_poll()  # every millisecond row fails: timestamp_in_future
    loop.drain()
    loop.sandbox.connector_poll()  # the corrected file
    with loop.session() as session:
        assert session.exec(select(QuarantinedRow)).all() == []
    assert sorted(loop.accepted()) == sorted(["ok", *(f"{name}-mfx1" for name in names)])
    assert max(originals_billed(loop).values()) == 1


@pytest.mark.parametrize("retention", [None, 1])
def test_a_row_failing_again_with_the_same_code_is_quarantined(
    loop: Loop, retention: int | None
) -> None:
    """`retention`: the hourly purge runs, with MFX_RETENTION_DAYS=1, two days after the
    first correction and before the corrected row is refused again: it deleted the
    correction's audit, the only record of the code the row was corrected for, and loop
    protection let `g1-mfx1` through the rules again (here quarantined by the customer map;
    in a probe whose map chained `ghost-a` to `ghost-b` to `ghost-c`, corrected again as
    `s1-mfx2`). The audit is now kept as long as Stripe takes usage, 35 days, as quarantined
    rows are."""
    Path(loop.settings.mfx_rules).write_text(RULES + '"ghost-1" = "cus_ghost"\n')  # no such
    now = int(time.time())
    rows = [["g1", now - 60, "api_requests", "ghost-1", "5"], ["ok", now - 60, "api_requests"]]
    rows[1] += ["cus_alice", "5"]
    _put(loop, "ghost.csv", usage_csv(rows))
    for cycle in range(3):  # import, remediate, import the corrected file, remediate ...
        loop.sandbox.connector_poll()
        loop.drain()
        if cycle == 0 and retention is not None:
            later = datetime.now(UTC) + timedelta(days=2 * retention)
            purge_expired(loop.engine, retention, now=later)
    with loop.session() as session:
        quarantined = session.exec(select(QuarantinedRow)).all()
    assert [(q.identifier, q.code) for q in quarantined] == [
        ("g1-mfx1", "meter_event_customer_not_found")
    ]
    assert "failed again" in quarantined[0].reason and "generation 1" in quarantined[0].reason
    assert loop.accepted() == ["ok"]
    corrected = [k for k in loop.objects() if k.startswith("usage/corrected/")]
    assert not [k for k in corrected if ".r2." in k]  # no second generation was written


def test_an_operators_rerun_corrects_a_row_that_failed_again_once_the_rules_are_fixed(
    loop: Loop,
) -> None:
    """Loop protection stops a corrected row that fails again with the same code from being
    corrected again by itself; "re-run with current rules" is the operator's decision after
    fixing the rules, and a quarantined row was never sent: the re-run corrects it (it kept
    it quarantined as "failed again", whatever the rules said)."""
    rules = Path(loop.settings.mfx_rules)
    rules.write_text(RULES + '"ghost-1" = "cus_ghost"\n')  # a mapping to no customer
    now = int(time.time())
    _put(loop, "ghost.csv", usage_csv([["g1", now - 60, "api_requests", "ghost-1", "5"]]))
    for _ in range(3):
        loop.sandbox.connector_poll()
        loop.drain()
    with loop.session() as session:
        [stopped] = session.exec(select(QuarantinedRow)).all()
    assert (stopped.identifier, stopped.customer) == ("g1-mfx1", "cus_ghost")
    assert loop.accepted() == []

    rules.write_text(RULES + '"cus_ghost" = "cus_alice"\n')  # the operator's fix
    queued = queue_rerun(loop.engine, QuarantineFilter(), Actor("api", "127.0.0.1"))
    assert queued["rows"] == 1
    loop.drain()
    loop.sandbox.connector_poll()  # Stripe imports the re-run's corrected file
    assert loop.accepted() == ["g1-mfx2"]
    assert max(originals_billed(loop).values()) == 1
    with loop.session() as session:
        left = session.exec(select(QuarantinedRow).where(col(QuarantinedRow.rerun_id).is_(None)))
        assert left.all() == []


def test_poller_and_error_report_resend_only_rejected_rows(loop: Loop) -> None:
    now = int(time.time())
    rows = [[f"b{n}", now - 60 - n, "api_requests", "cus_alice", str(n + 1)] for n in range(30)]
    rows += [
        ["ms", (now - 60) * 1000, "api_requests", "cus_alice", "5"],  # the poller refuses it
        ["mapped", now - 60, "api_requests", "acme-42", "5"],  # Stripe reports it
    ]
    _put(loop, "partly.csv", usage_csv(rows))
    with bundled_poller(loop) as deps:
        for _ in range(3):
            run_poll_pass(deps)
            reported(loop)
    accepted = sorted(loop.accepted())
    assert accepted == sorted([*(f"b{n}" for n in range(30)), "ms-mfx1", "mapped-mfx1"])
    assert max(originals_billed(loop).values()) == 1
    corrected = [k for k in loop.objects() if k.startswith("usage/corrected/")]
    bodies = b"".join(loop.s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in corrected)
    assert b"b1" not in bodies  # no billed row in any corrected object


def test_a_customer_stripe_does_not_know_is_followed_past_its_samples_in_sending_order(
    loop: Loop,
) -> None:
    """The bundled poller sends an object's rows in row order. Stripe samples three of the
    rows of a `cus_` customer it does not know: the rows sent after the first sample were
    refused as well, and go to quarantine with it (no `[customers]` entry maps it); the rows of
    that customer are not left out of the report."""
    now = int(time.time())
    rows = [[f"k{n}", now - 60, "api_requests", "cus_unknown", "5"] for n in range(6)]
    _put(loop, "unknown.csv", usage_csv(rows))
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)
        reported(loop)  # 6 errors, 3 sampled
    assert loop.accepted() == []
    with loop.session() as session:
        quarantined = session.exec(select(QuarantinedRow)).all()
        [report] = session.exec(select(ErrorReport)).all()
    assert sorted(q.identifier for q in quarantined) == [f"k{n}" for n in range(6)]
    assert {q.code for q in quarantined} == {"meter_event_customer_not_found"}
    assert report.status == "remediated"


def test_rows_an_earlier_version_of_a_rewritten_file_sent_are_not_taken_for_a_report(
    loop: Loop,
) -> None:
    """The day's file rewritten with a new row first: the poller sends only the new row (the
    others were sent and billed with the first version), and Stripe refuses it: its customer
    was deleted in between. The rows of that customer after it in the new version were sent
    before the deletion, by the first version, not after the sampled row: taken for the
    report, the rules' mapping re-sent them to another customer (billed twice)."""
    now = int(time.time())
    add_rules(loop, '"cus_gone" = "cus_alice"\n')
    loop.sandbox.create_customer("cus_gone")
    old = [[f"o{n}", now - 120, "api_requests", "cus_gone", "5"] for n in range(2)]
    _put(loop, "day.csv", usage_csv(old))
    client = stripe.StripeClient(SANDBOX_API_KEY, base_addresses={"api": loop.sandbox.base_url})
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)
        assert sorted(loop.accepted()) == ["o0", "o1"]  # billed
        client.v1.customers.delete("cus_gone")
        _put(loop, "day.csv", usage_csv([["n0", now - 60, "api_requests", "cus_gone", "5"], *old]))
        run_poll_pass(deps)  # n0 only: o0 and o1 were sent by the first version
        reported(loop)  # 1 error: n0
        run_poll_pass(deps)  # the corrected file
    assert_only_the_new_row_was_mapped(loop)


def assert_only_the_new_row_was_mapped(loop: Loop) -> None:
    """o0 and o1 billed once, with the first version; n0 mapped to cus_alice and billed."""
    assert sorted(loop.accepted()) == ["n0-mfx1", "o0", "o1"]
    assert max(originals_billed(loop).values()) == 1
    with loop.session() as session:
        [report] = session.exec(select(ErrorReport)).all()
        audit = session.exec(select(CorrectionAudit)).all()
    assert [(a.identifier, a.after) for a in audit] == [("n0", "cus_alice")]
    assert report.status == "remediated"


def test_a_row_meterfix_corrected_is_not_sent_again_when_the_file_is_fixed_by_hand(
    loop: Loop,
) -> None:
    """The poller refused a row (a timestamp in milliseconds) and meterfix corrected it: `x-mfx1`
    was billed. The customer then fixed the row in the file and uploaded it again with the
    others: the fixed `x` went out too (another identifier: nothing dedupes it), billed twice."""
    now = int(time.time())
    row = ["x", (now - 60) * 1000, "api_requests", "cus_alice", "5"]
    other = ["a", now - 60, "api_requests", "cus_alice", "3"]
    _put(loop, "day.csv", usage_csv([other, row]))
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)  # a sent, x refused by the poller
        loop.drain()  # x corrected
        run_poll_pass(deps)  # the corrected file: x-mfx1
        assert sorted(loop.accepted()) == ["a", "x-mfx1"]
        fixed = [*row[:1], now - 60, *row[2:]]
        _put(
            loop,
            "day.csv",
            usage_csv([other, fixed, ["b", now - 30, "api_requests", "cus_alice", "1"]]),
        )
        run_poll_pass(deps)
        loop.drain()
    assert sorted(loop.accepted()) == ["a", "b", "x-mfx1"]
    assert max(originals_billed(loop).values()) == 1


@pytest.mark.parametrize("held_again", [False, True], ids=["first_rerun", "second_rerun"])
def test_a_row_an_operators_rerun_corrected_is_not_sent_again_when_fixed_by_hand(
    loop: Loop, held_again: bool
) -> None:
    """The poller refused a row (no meter by that name) and meterfix quarantined it; the
    operator mapped the name and re-ran it: `x-mfx1` was billed. The customer then fixed the
    row in the file and uploaded it again: the re-run's correction, recorded with the re-run
    as its source, was not seen, and `x` went out too (billed twice). `held_again`: a first
    re-run quarantined the row again (the rules were not changed yet) and a second one
    corrected it, its rows quarantined by the first re-run, not by a run over the file."""
    with bundled_poller(loop) as deps:
        now, other, _row, fixed = a_row_the_poller_refused(loop, deps)
        if held_again:
            rerun(loop)  # the same rules: quarantined again, by the re-run
        with loop.session() as session:
            held = session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).all()
        taken = [("x", False)] if held_again else []
        assert [(q.identifier, q.rerun_id is None) for q in held] == [*taken, ("x", True)]
        add_rules(loop, '[event_names]\n"legacy_calls" = "api_requests"\n')
        rerun(loop)
        run_poll_pass(deps)  # the (last) re-run's corrected file: x-mfx1
        assert sorted(loop.accepted()) == ["a", "x-mfx1"]
        later = ["b", now - 30, "api_requests", "cus_alice", "1"]
        _put(loop, "day.csv", usage_csv([other, fixed, later]))
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "b", "x-mfx1"]
    assert max(originals_billed(loop).values()) == 1


def test_a_row_a_rerun_sent_unchanged_is_not_sent_again_with_the_rewritten_file(
    loop: Loop,
) -> None:
    """The poller refused a row (no meter by that name) and meterfix quarantined it; the
    operator created the meter and re-ran it: the row now passes as it is, counted valid and
    re-sent unchanged as `x-mfx1` (no correction: its audit row says it was re-sent as it
    came). The file was then rewritten with a new row: the poller took `x` for a row never
    sent and billed it again."""
    with bundled_poller(loop) as deps:
        now, other, row, _fixed = a_row_the_poller_refused(loop, deps)
        loop.sandbox.create_meter("legacy_calls")
        rerun(loop)
        assert deps.meters is not None
        deps.meters.refresh()  # the poller's meters are cached for a while
        run_poll_pass(deps)  # the re-run's corrected file: x-mfx1, sent unchanged
        assert sorted(loop.accepted()) == ["a", "x-mfx1"]
        with loop.session() as session:
            audit = session.exec(select(CorrectionAudit)).all()
        assert [(a.identifier, a.rule, a.new_identifier) for a in audit] == [
            ("x", "resend_unchanged", "x-mfx1")
        ]
        later = ["b", now - 30, "api_requests", "cus_alice", "1"]
        _put(loop, "day.csv", usage_csv([other, row, later]))
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "b", "x-mfx1"]


def test_a_quarantined_row_the_customer_fixed_and_sent_is_not_re_run(loop: Loop) -> None:
    """The poller refused a row (no meter by that name) and meterfix quarantined it; the
    customer fixed the row and uploaded it in a new file, and the poller sent it as `x`. The
    operator then mapped the old name and re-ran every quarantined row: the row went out a
    second time as `x-mfx1` ("quarantined rows were never sent", but this one was since).
    (The same file uploaded again marks the row taken again when it is sent: below.)"""
    with bundled_poller(loop) as deps:
        _now, _other, _row, fixed = a_row_the_poller_refused(loop, deps)
        _put(loop, "day-fixed.csv", usage_csv([fixed]))
        run_poll_pass(deps)  # x sent, fixed
        assert sorted(loop.accepted()) == ["a", "x"]
        add_rules(loop, '[event_names]\n"legacy_calls" = "api_requests"\n')
        rerun(loop)
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "x"]
    with loop.session() as session:
        held = session.exec(select(QuarantinedRow)).all()
        tasks = session.exec(
            select(InboxEvent).where(InboxEvent.event_type == "meterfix.remediate.quarantine_rerun")
        ).all()
    assert [(q.identifier, q.rerun_id) for q in held] == [("x", None)]  # left as it is
    # marked when the poller sent it from day-fixed.csv (it was listed as waiting for a fix,
    # `taken_again=no`, until a re-run's pick found it sent): the re-run had nothing to take
    assert (held[0].taken_again or "").startswith("usage/day-fixed.csv (ETag ")
    assert ", sent by the poller " in str(held[0].taken_again)
    assert tasks == []


def test_a_row_stripe_refused_after_the_poller_sent_it_may_be_re_run(loop: Loop) -> None:
    """The other side of the test above: the poller sent the row and Stripe refused it (a
    customer it does not know, in an error report); quarantined, it was sent before it was
    quarantined, never billed: the operator's re-run after mapping the customer sends it."""
    now = int(time.time())
    _put(loop, "day.csv", usage_csv([["g", now - 60, "api_requests", "cus_ghost", "5"]]))
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)  # sent; Stripe reports it
        reported(loop)  # quarantined: no rule maps cus_ghost
        with loop.session() as session:
            [held] = session.exec(select(QuarantinedRow)).all()
        assert (held.identifier, held.code) == ("g", "meter_event_customer_not_found")
        add_rules(loop, '"cus_ghost" = "cus_alice"\n')
        rerun(loop)
        run_poll_pass(deps)  # the re-run's corrected file
    assert loop.accepted() == ["g-mfx1"]


def test_a_refused_row_sent_fixed_before_its_remediation_ran_is_not_corrected(loop: Loop) -> None:
    """The poller refused a row (a timestamp in milliseconds) and handed it to remediation;
    before the worker got to it (a long run ahead of it), the customer fixed the row and
    uploaded the file again, and the poller sent it. The remediation then corrected the
    first version's row and sent it as `x-mfx1` too."""
    now = int(time.time())
    other = ["a", now - 60, "api_requests", "cus_alice", "3"]
    row = ["x", (now - 60) * 1000, "api_requests", "cus_alice", "5"]
    _put(loop, "day.csv", usage_csv([other, row]))
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)  # a sent; x refused, its remediation queued
        _put(loop, "day.csv", usage_csv([other, [row[0], now - 60, *row[2:]]]))
        run_poll_pass(deps)  # x sent as fixed
        assert sorted(loop.accepted()) == ["a", "x"]
        loop.drain()  # the first version's refused rows
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "x"]
    with loop.session() as session:
        assert session.exec(select(CorrectionAudit)).all() == []
        assert session.exec(select(QuarantinedRow)).all() == []
        [task] = session.exec(
            select(InboxEvent).where(InboxEvent.event_type == "meterfix.remediate.poller_rows")
        )
    assert (task.status, task.outcome) == (
        "done",
        f"remediated (poller:{task.event_id.split('poller_rows_')[1]}); 1 left out: sent "
        "since from the file (this version or another)",
    )


def _held_and_the_repair(loop: Loop) -> tuple[list[QuarantinedRow], InboxEvent]:
    """The quarantined rows, oldest first, and the task of the one whole-file repair."""
    with loop.session() as session:
        held = session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).all()
        [task] = session.exec(
            select(InboxEvent).where(
                InboxEvent.event_type == "meterfix.remediate.import_set_failed"
            )
        ).all()
    return list(held), task


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_a_row_stripe_refused_and_meterfix_quarantined_is_sent_when_fixed_by_hand(
    loop: Loop, delimiter: str
) -> None:
    """The poller sent a row and Stripe refused it (a customer it does not know, in an error
    report); no rule maps the customer, so meterfix quarantined it: never billed. The
    customer fixed the row in the file and uploaded it again: the poller left it out as a
    row another version had sent (usage lost), although Stripe had refused it. Written with
    `;` delimiters, the new version fails whole, and its repair left `g` out the same way
    (version 1's entry held the old customer, no one's fix would take): it sends `g` as fixed
    (`g-mfx1`) and marks version 1's entry taken again; `a` (billed) stays left out."""
    with bundled_poller(loop) as deps:
        other, row = a_row_stripe_refused(loop, deps)
        with loop.session() as session:
            assert [q.identifier for q in session.exec(select(QuarantinedRow))] == ["g"]
        time.sleep(1)
        fixed = usage_csv([other, [*row[:3], "cus_alice", row[4]]])
        _put(loop, "day.csv", fixed.replace(b",", delimiter.encode()))
        assert run_poll_pass(deps).failed_files == (delimiter == ";")
        reported(loop)  # the whole-file repair, if any
        run_poll_pass(deps)  # the repair's corrected file
    if delimiter == ",":
        assert sorted(loop.accepted()) == ["a", "g"]
        return
    assert sorted(loop.accepted()) == ["a", "g-mfx1"]
    held, task = _held_and_the_repair(loop)
    assert [(q.identifier, q.taken_again is not None) for q in held] == [("g", True)]
    outcome = str(task.outcome)
    assert "; 1 quarantined before refused again (marked taken again)" in outcome, outcome
    assert outcome.endswith("; 1 left out: sent before from the file (this version or another)")


def test_a_refused_row_fixed_by_hand_in_a_file_of_another_name_is_sent_once(loop: Loop) -> None:
    """As above, but the customer put the fixed rows in `day-fixed.csv` beside `day.csv`: the
    poller left `g` out as a row `day.csv` had sent, although Stripe had refused it there and
    meterfix held it in quarantine (never billed, nothing said; the entry left for a re-run).
    It is sent as fixed, `day.csv`'s entry is marked taken again, and a re-run of the
    quarantine leaves it; `a` (billed from `day.csv`) stays left out."""
    with bundled_poller(loop) as deps:
        other, row = a_row_stripe_refused(loop, deps)
        _put(loop, "day-fixed.csv", usage_csv([other, [*row[:3], "cus_alice", row[4]]]))
        report = run_poll_pass(deps)
        reported(loop)
        assert (report.sent, report.left_out) == (2, 1), report
    assert sorted(loop.accepted()) == ["a", "g"]
    with loop.session() as session:
        [held] = session.exec(select(QuarantinedRow)).all()
    assert held.identifier == "g" and "day-fixed.csv" in str(held.taken_again), held
    add_rules(loop, '"cus_ghost" = "cus_alice"\n')  # the map a re-run would send g by
    rerun(loop)
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "g"]
    assert originals_billed(loop) == Counter({"a": 1, "g": 1})


def test_two_reports_about_one_object_run_at_once_correct_its_rows_once(loop: Loop) -> None:
    """Two error reports about the same rows (Stripe's, and a later one sampling others of
    them), taken by two workers at once: each run read which rows another run over the object
    had handled before either wrote, and both corrected all four: two corrected objects of the
    same `<id>-mfx1` rows (Stripe's connector, importing them a day apart, bills them twice),
    two audit rows a correction, every count doubled. The runs over one object take turns."""
    add_rules(loop, '"nobody" = "cus_bob"\n')
    now = int(time.time())
    rows = [[f"c{i}", now - 60, "api_requests", "nobody", str(i)] for i in range(1, 5)]
    _put(loop, "day.csv", usage_csv(rows))
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)
        sandbox = loop.sandbox_app.extensions["sandbox"]
        [first] = sandbox.flush_reports()  # four errors, three sampled
        meter = next(m["id"] for m in loop.sandbox.meters() if m["event_name"] == "api_requests")
        code, message = "meter_event_customer_not_found", "No customer"
        again = build_error_report_event(meter, [(code, message, f"c{i}") for i in (4, 3, 2)])
        sandbox.deliver_to_webhook([sandbox.add_event(again)])
        with loop.session() as session:
            assert len(session.exec(select(InboxEvent)).all()) == 2, first
        workers = [threading.Thread(target=loop.drain) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        loop.drain()
        run_poll_pass(deps)  # the corrected rows
    with loop.session() as session:
        audit = session.exec(select(CorrectionAudit)).all()
        runs = session.exec(select(RemediationRun)).all()
    corrected = [a.new_identifier for a in audit if a.rule == "map_customer"]
    assert sorted(corrected) == [f"c{i}-mfx1" for i in range(1, 5)]
    assert sum(run.corrected for run in runs) == 4, [(r.run_key, r.corrected) for r in runs]
    outputs = [key for key in loop.objects() if ".corrected." in key]
    assert len(outputs) == 1, outputs
    assert sorted(loop.accepted()) == [*(f"c{i}-mfx1" for i in range(1, 5))]


@pytest.mark.parametrize("change", ["fixed", "fixed_in_ms", "unchanged"])
def test_a_refused_row_fixed_by_hand_before_its_report_came_is_sent_as_it_is_now(
    loop: Loop, change: str
) -> None:
    """The poller sent a row and Stripe refused it (a customer it does not know); before
    Stripe's error report came, the customer fixed the row in the file and uploaded it again.
    The poller left the row out of the new version (another version had sent it), and the
    report then read the fixed row from the new version and quarantined it for the old row's
    code ("cus_alice is not in the customer map"): never billed. The row as it is now was never
    sent: it is sent now (`g-mfx1`), corrected by the rules if our validation finds a problem
    in it (`fixed_in_ms`: the timestamp written in milliseconds). A rewrite that leaves the
    row as it was (`unchanged`) still quarantines it for the report's code."""
    now = int(time.time())
    other = ["a", now - 60, "api_requests", "cus_alice", "3"]
    row = ["g", now - 60, "api_requests", "cus_ghost", "5"]
    again = {
        "fixed": [*row[:3], "cus_alice", row[4]],
        "fixed_in_ms": ["g", (now - 60) * 1000, "api_requests", "cus_alice", row[4]],
        "unchanged": row,
    }[change]
    with bundled_poller(loop) as deps:
        _put(loop, "day.csv", usage_csv([other, row]))
        run_poll_pass(deps)  # both sent; Stripe refuses g, its report not sent yet
        _put(loop, "day.csv", usage_csv([other, again, ["b", now - 30, *other[2:]]]))
        run_poll_pass(deps)  # b only: a and g were sent by the first version
        reported(loop)
        run_poll_pass(deps)  # the report's corrected file, if any
    with loop.session() as session:
        held = session.exec(select(QuarantinedRow)).all()
        [report] = session.exec(select(ErrorReport)).all()
        [task] = session.exec(
            select(InboxEvent).where(InboxEvent.event_type == "meterfix.remediate.error_report")
        )
        audit = session.exec(select(CorrectionAudit)).all()
    assert report.status == "remediated"
    outcome = "remediated 1 row(s) for 1 reported error(s)"
    if change == "unchanged":
        assert sorted(loop.accepted()) == ["a", "b"]
        assert [(q.identifier, q.code) for q in held] == [("g", "meter_event_customer_not_found")]
        assert task.outcome == outcome
    else:
        assert sorted(loop.accepted()) == ["a", "b", "g-mfx1"]
        # nor is `b` (cus_alice, after g in the new version) taken for the old row's customer
        assert held == []
        changed = (
            "1 changed in the file since sent: taken as they are now, not for the report's code"
        )
        assert task.outcome == f"{outcome}; {changed}"
        corrected = [(a.identifier, a.code, a.after) for a in audit]
        ms = [("g", "timestamp_in_future", str(now - 60))]
        as_it_came = [("g", "rejected", "g-mfx1")]  # re-sent as it is: its line says so
        assert corrected == (ms if change == "fixed_in_ms" else as_it_came)
    assert max(originals_billed(loop).values()) == 1


def test_rows_without_identifiers_in_a_rewritten_file_are_billed_reported_and_corrected_once(
    loop: Loop,
) -> None:
    """The day's file, its rows without identifiers: one billed, one Stripe refuses (a customer
    it does not know), one in milliseconds (the poller's validation refuses it and meterfix
    sends it corrected). Rewritten with a new row, in another order, before Stripe's report
    came: each row got an identifier made of the object's version, so the new version's rows
    were all new: the billed row was billed twice, the row in milliseconds corrected and
    billed twice, and the report's sampled row was not found in the object (`partial`). Now a
    row is named by what it holds: the new version sends the new row only, and the report
    finds its row in the version the bucket holds and quarantines it."""
    now = int(time.time())
    billed = ["", now - 60, "api_requests", "cus_alice", "3"]
    ghost = ["", now - 60, "api_requests", "cus_ghost", "5"]
    in_ms = ["", (now - 60) * 1000, "api_requests", "cus_alice", "7"]
    new = ["", now - 30, "api_requests", "cus_alice", "11"]
    with bundled_poller(loop) as deps:
        _put(loop, "day.csv", usage_csv([billed, ghost, in_ms]))
        run_poll_pass(deps)  # billed and ghost sent; the row in ms to remediation
        loop.drain()
        run_poll_pass(deps)  # the corrected file
        _put(loop, "day.csv", usage_csv([new, in_ms, ghost, billed]))
        run_poll_pass(deps)
        loop.drain()
        reported(loop)
        run_poll_pass(deps)
    events = loop.sandbox.meter_events()
    sent = sorted((e["payload"]["stripe_customer_id"], e["payload"]["value"]) for e in events)
    assert sent == [("cus_alice", "11"), ("cus_alice", "3"), ("cus_alice", "7")]
    assert loop.sandbox.duplicates() == []
    with loop.session() as session:
        held = session.exec(select(QuarantinedRow)).all()
        [report] = session.exec(select(ErrorReport)).all()
        audit = session.exec(select(CorrectionAudit)).all()
    assert report.status == "remediated"
    [ghostly] = held
    assert (ghostly.code, ghostly.customer) == ("meter_event_customer_not_found", "cus_ghost")
    assert ghostly.identifier.startswith("mfx-")
    assert [(a.code, a.after) for a in audit] == [("timestamp_in_future", str(now - 60))]
    assert max(originals_billed(loop).values()) == 1


def test_a_refused_row_sent_changed_and_refused_again_is_quarantined_not_sent_again(
    loop: Loop,
) -> None:
    """Stripe refused a row the poller sent (a customer it does not know) and meterfix
    quarantined it; the customer changed the row by hand, to another customer Stripe does not
    know, and the poller sent it (Stripe had refused it). Stripe's report about that send is
    about the row as it is now, not a row changed since it was sent: quarantined anew, not
    sent as `g-mfx1` to be refused a third time."""
    now = int(time.time())
    other = ["a", now - 60, "api_requests", "cus_alice", "3"]
    row = ["g", now - 60, "api_requests", "cus_ghost", "5"]
    with bundled_poller(loop) as deps:
        for customer in ("cus_ghost", "cus_phantom"):
            _put(loop, "day.csv", usage_csv([other, [*row[:3], customer, row[4]]]))
            run_poll_pass(deps)  # g sent; Stripe reports it
            reported(loop)  # g quarantined: no rule maps the customer
        run_poll_pass(deps)
        reported(loop)
    assert sorted(loop.accepted()) == ["a"]
    with loop.session() as session:
        held = session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).all()
        tasks = session.exec(
            select(InboxEvent).where(InboxEvent.event_type == "meterfix.remediate.error_report")
        ).all()
    assert [(q.identifier, q.customer) for q in held] == [
        ("g", "cus_ghost"),
        ("g", "cus_phantom"),
    ]
    assert held[0].taken_again is not None and held[1].taken_again is None
    assert len(tasks) == 2
    assert all(" changed " not in str(task.outcome) for task in tasks)


def test_a_row_a_rerun_held_before_it_was_sent_fixed_is_not_sent_by_the_next_version(
    loop: Loop,
) -> None:
    """A row the poller refused was quarantined, and a re-run held it again (the rules were
    not fixed); the customer then fixed the row in the file and the poller sent it. The day's
    next rewrite sent it once more: the re-run's quarantined row was taken for a row Stripe
    refused after it was sent (a day later, past Stripe's dedupe window, billed twice)."""
    with bundled_poller(loop) as deps:
        now, other, _row, fixed = a_row_the_poller_refused(loop, deps)
        rerun(loop)  # held again by the re-run
        _put(loop, "day.csv", usage_csv([other, fixed]))
        run_poll_pass(deps)  # x sent, fixed
        _put(loop, "day.csv", usage_csv([other, fixed, ["b", now - 30, *fixed[2:]]]))
        report = run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "b", "x"]
    assert loop.sandbox.duplicates() == []
    assert report.left_out == 2  # a and x


def test_a_quarantined_row_sent_again_unfixed_and_refused_again_is_not_lost(loop: Loop) -> None:
    """Stripe refused a row the poller sent (a customer it does not know) and meterfix
    quarantined it. The file was uploaded again with the row as it was: the poller sent it
    again (Stripe had refused it, never billed), Stripe refused it again, and the new report
    skipped it as a row a run over the object had handled. The operator then mapped the
    customer and re-ran the quarantine: the row had been sent since it was quarantined, so the
    re-run left it, and it was never billed. Now the second refusal is the report's, and the
    re-run sends the row once."""
    now = int(time.time())
    other = ["a", now - 60, "api_requests", "cus_alice", "3"]
    row = ["g", now - 60, "api_requests", "cus_ghost", "5"]
    _put(loop, "day.csv", usage_csv([other, row]))
    with bundled_poller(loop) as deps:
        for body in (usage_csv([other, row]), usage_csv([other, row, ["b", now - 30, *other[2:]]])):
            _put(loop, "day.csv", body)
            run_poll_pass(deps)  # g sent; Stripe reports it
            reported(loop)  # g quarantined: no rule maps cus_ghost
        add_rules(loop, '"cus_ghost" = "cus_alice"\n')
        rerun(loop)
        run_poll_pass(deps)  # the re-run's corrected file
    assert sorted(loop.accepted()) == ["a", "b", "g-mfx1"]
    assert max(originals_billed(loop).values()) == 1


def test_a_refused_row_sent_fixed_by_hand_is_not_re_run(loop: Loop) -> None:
    """Stripe refused a row the poller sent (a customer it does not know) and meterfix
    quarantined it; the customer fixed the row in the file and the poller sent it again,
    billed. The operator then mapped the old customer and re-ran the quarantine: the row was
    recorded as sent by the first version, before it was quarantined, so the re-run sent it
    as `g-mfx1` (billed twice)."""
    now = int(time.time())
    other = ["a", now - 60, "api_requests", "cus_alice", "3"]
    row = ["g", now - 60, "api_requests", "cus_ghost", "5"]
    with bundled_poller(loop) as deps:
        for customer in ("cus_ghost", "cus_alice"):
            _put(loop, "day.csv", usage_csv([other, [*row[:3], customer, row[4]]]))
            run_poll_pass(deps)  # g sent; the first time Stripe reports it
            reported(loop)  # g quarantined: no rule maps cus_ghost
        assert sorted(loop.accepted()) == ["a", "g"]
        add_rules(loop, '"cus_ghost" = "cus_alice"\n')
        queued = rerun(loop)
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "g"]
    assert (queued["queued"], queued["rows"]) == (False, 0)
    with loop.session() as session:
        [held] = session.exec(select(QuarantinedRow)).all()
    assert held.rerun_id is None and held.taken_again is not None
    assert held.taken_again.startswith("usage/day.csv (ETag ")
    assert ", sent by the poller " in held.taken_again


def test_a_quarantined_row_is_marked_taken_again_only_once_stripe_took_its_batch(
    loop: Loop,
) -> None:
    """The same file uploaded again with the refused row fixed, but Stripe refuses the
    request (HTTP 400) and the poller gives the object up: the row was never sent, so it stays
    a quarantined row a re-run takes (it was marked when its batch was recorded, before the
    send). Once `poll --retry` sends it, it is marked."""
    with bundled_poller(loop) as deps:
        _now, other, _row, fixed = a_row_the_poller_refused(loop, deps)
        stream = "/v2/billing/meter_event_stream"
        loop.sandbox.inject_fault("POST", stream, 400, count=-1)
        _put(loop, "day.csv", usage_csv([other, fixed]))
        assert run_poll_pass(deps).gave_up == 1
        with loop.session() as session:
            [held] = session.exec(select(QuarantinedRow)).all()
        assert (held.identifier, held.taken_again) == ("x", None)
        assert queue_rerun(loop.engine, QuarantineFilter(), Actor("api", "127.0.0.1"))["rows"] == 1
        loop.sandbox.clear_faults()
        plan = find_retry(deps.engine, "usage/day.csv", deps.bucket.prefix, deps.clock())
        assert plan is not None
        reopen(deps.engine, plan, confirmed=False)  # `meterfix poll --retry usage/day.csv`
        deps.only = {(plan.obj.key, plan.obj.etag)}
        assert run_poll_pass(deps).imported == 1
    assert sorted(loop.accepted()) == ["a", "x"]
    with loop.session() as session:
        [held] = session.exec(select(QuarantinedRow)).all()
    assert held.taken_again is not None and ", sent by the poller " in held.taken_again


DATA = Path(__file__).parent.parent / "data" / "usage"


def cli_remediate(file: Path, out: Path) -> dict[str, object]:
    args = ["remediate", str(file), "--out", str(out), "--json", "--now", "1764000000"]
    args += ["--meters", str(DATA / "meters.json"), "--rules", str(DATA / "rules.toml")]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(out.parent)}
    proc = subprocess.run(
        [METERFIX, *args], cwd=out.parent, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    summary: dict[str, object] = json.loads(proc.stdout)
    return summary


def test_cli_takes_the_generation_from_the_files_lineage(tmp_path: Path) -> None:
    """A failed file of ours (its `file://` lineage sidecar says generation 1): generation 2,
    originals from lineage; the same bytes without lineage are a customer's own file."""
    ms = 1764000000 * 1000
    body = f"{','.join(HEADER)},error_code\n"
    body += f"a-mfx1,{ms},api_requests,cus_1,5,timestamp_in_future\n"
    body += f"b-mfx1,{ms},api_requests,cus_1,5,timestamp_in_future\n"
    ours = tmp_path / "ours" / "x.corrected.r1.csv"
    ours.parent.mkdir()
    ours.write_text(body)
    ours.with_name(ours.name + ".meta.json").write_text(json.dumps({"mfx-generation": "1"}))
    theirs = tmp_path / "theirs" / "x.corrected.r1.csv"
    theirs.parent.mkdir()
    theirs.write_text(body)
    for file, identifiers, name in (
        (ours, "a-mfx2,b-mfx2", "x.corrected.r2.csv"),
        (theirs, "a-mfx1-mfx1,b-mfx1-mfx1", "x.corrected.r1.csv"),
    ):
        summary = cli_remediate(file, file.parent / "out")
        outputs = summary["outputs"]
        assert isinstance(outputs, dict)
        (corrected,) = outputs["corrected"]
        assert Path(corrected).name == name
        rows = list(csv.DictReader(io.StringIO(Path(corrected).read_text())))
        assert ",".join(r["identifier"] for r in rows) == identifiers


@pytest.mark.parametrize(
    "meta",
    [
        {"mfx-generation": "1", "mfx-kind": "quarantine"},
        {"mfx-generation": "1", "mfx-kind": "corrected", "mfx-identifiers": "kept"},
    ],
    ids=["quarantine-file", "identifiers-kept"],
)
def test_a_file_of_ours_whose_rows_kept_their_identifiers_is_traced_by_none(
    tmp_path: Path, meta: dict[str, str]
) -> None:
    """Lineage, not spelling: a quarantine file of ours (edited and fed back in) and a run's
    output under `--identifiers keep` hold the identifiers the rows came with. Their `-mfx1`
    was stripped as if generation 1 had appended it: the customer's own `c-mfx1` went out as
    `c-mfx2`, the identifier of its neighbour `c` (two rows, one identifier)."""
    ms = 1764000000 * 1000
    body = f"{','.join(HEADER)},error_code\n"
    body += f"c-mfx1,{ms},api_requests,cus_1,5,timestamp_in_future\n"
    body += f"c,{ms},api_requests,cus_1,6,timestamp_in_future\n"
    ours = tmp_path / "x.quarantine.r1.csv"
    ours.write_text(body)
    ours.with_name(ours.name + ".meta.json").write_text(json.dumps(meta))
    summary = cli_remediate(ours, tmp_path / "out")
    outputs = summary["outputs"]
    assert isinstance(outputs, dict)
    (corrected,) = outputs["corrected"]
    assert Path(corrected).name == "x.corrected.r2.csv"  # still generation 2
    rows = list(csv.DictReader(io.StringIO(Path(corrected).read_text())))
    assert [(r["identifier"], r["payload_value"]) for r in rows] == [
        ("c-mfx1-mfx2", "5"),
        ("c-mfx2", "6"),
    ]


def test_the_cli_records_that_a_run_kept_its_identifiers(tmp_path: Path) -> None:
    """`--identifiers keep --upload`: the output's lineage says its identifiers were kept,
    so a later run over it does not take them for derived ones."""
    ms = 1764000000 * 1000
    source = tmp_path / "k.csv"
    source.write_text(
        f"{','.join(HEADER)},error_code\nk-mfx1,{ms},api_requests,cus_1,5,timestamp_in_future\n"
    )
    args = [str(source), "--out", str(tmp_path / "out"), "--now", "1764000000"]
    args += ["--meters", str(DATA / "meters.json"), "--rules", str(DATA / "rules.toml")]
    (tmp_path / "b").mkdir()  # a bucket folder that is not there is refused
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BUCKET_URL": f"file://{tmp_path}/b"}
    proc = subprocess.run(
        [METERFIX, "remediate", *args, "--identifiers", "keep", "--upload", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    sidecars = sorted((tmp_path / "b").rglob("*.corrected.r1.csv.meta.json"))
    assert [json.loads(p.read_text())["mfx-identifiers"] for p in sidecars] == ["kept"]
    corrected = sidecars[0].with_name(sidecars[0].name.removesuffix(".meta.json"))
    assert "k-mfx1," in corrected.read_text()


def test_lineage_lookup_survives_identifiers_we_never_write(db_url: str, tmp_path: Path) -> None:
    from remediation.rules import load_rules
    from service.db import make_engine
    from service.jobs.input_lineage import run_lineage

    path = tmp_path / "failed.csv"
    path.write_bytes(
        f"{','.join(HEADER)},error_code\n".encode()
        + b"nul\x00id,1764000000,api_requests,cus_1,5,timestamp_in_future\n"
        + b"x" * 600
        + b",1764000000,api_requests,cus_1,5,timestamp_in_future\n"
    )
    engine = make_engine(db_url)
    try:
        generation, lineage, _ = run_lineage(engine, path, load_rules(None), "failed.csv", 2)
    finally:
        engine.dispose()
    assert lineage.ancestors == {}
    assert generation == 2


def test_a_timestamp_past_64_bits_is_quarantined_and_the_rest_billed(loop: Loop) -> None:
    """A row whose timestamp is 20 digits (no time, but digits): the poller failed the whole
    file on it (its 64-bit columns), so no row of it was billed. Now the file is imported,
    the row handed to remediation and quarantined with a reason."""
    now = int(time.time())
    rows: list[list[object]] = [["h", "9" * 20, "api_requests", "cus_alice", "5"]]
    rows += [[f"k{n}", now - 60, "api_requests", "cus_alice", "5"] for n in range(2)]
    _put(loop, "day.csv", usage_csv(rows))
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)
        loop.drain()
    assert sorted(loop.accepted()) == ["k0", "k1"]
    with loop.session() as session:
        [held] = session.exec(select(QuarantinedRow)).all()
    assert (held.identifier, held.code) == ("h", "timestamp_in_future"), held.reason
    assert "9" * 20 in str(held.reason)


def a_row_the_connector_refused(loop: Loop, reruns: int = 0) -> list[list[object]]:
    """The day's file: `ok1`, and `g1` naming a customer Stripe does not know (`ghost-1`).
    Stripe's connector bills ok1 and refuses g1, and meterfix quarantines it (no rule maps
    the customer); `reruns` re-runs before the rules are fixed hold it again. The rows."""
    now = int(time.time()) - 60
    rows: list[list[object]] = [["ok1", now, "api_requests", "cus_alice", "3"]]
    rows.append(["g1", now, "api_requests", "ghost-1", "5"])
    _put(loop, "day.csv", usage_csv(rows))
    loop.sandbox.connector_poll()
    loop.drain()  # g1 quarantined
    for _ in range(reruns):
        rerun(loop)  # quarantined again: the rules are not fixed yet
    return rows


def fixed_by_hand_then_rerun(loop: Loop, rows: list[list[object]]) -> None:
    """The customer fixes `g1` by hand and uploads the day's file again: the connector bills
    it (ok1 deduped). The operator, not knowing, maps the customer and re-runs the
    quarantine; Stripe's connector polls again. Nothing more may be billed."""
    time.sleep(1)  # S3 stamps whole seconds: uploaded after the row was quarantined
    rows[1][3] = "cus_alice"
    _put(loop, "day.csv", usage_csv(rows))
    loop.sandbox.connector_poll()
    assert sorted(loop.accepted()) == ["g1", "ok1"]
    add_rules(loop, '"ghost-1" = "cus_alice"\n')
    rerun(loop)
    loop.sandbox.connector_poll()
    assert sorted(loop.accepted()) == ["g1", "ok1"]


@pytest.mark.parametrize(("mode", "reruns"), [("off", 0), ("index", 0), ("off", 1)])
def test_a_quarantined_row_stripes_connector_took_again_fixed_is_left_by_a_rerun(
    db_url: str,
    s3_endpoint: str,
    tmp_path: Path,
    make_app: Callable[[Settings], Flask],
    mode: str,
    reruns: int,
) -> None:
    """Stripe's connector refused a row (a customer it does not know) and meterfix
    quarantined it (and, `reruns`, a re-run before the rules were fixed quarantined it
    again). The customer then fixed the row by hand and uploaded the file again, and the
    connector billed it; the operator, not knowing, mapped the customer and re-ran the
    quarantine: the row went out again as `g1-mfx1`, billed twice (the default mode indexes
    nothing, and in index mode the poller had not indexed the new version yet)."""
    with running_loop(db_url, s3_endpoint, tmp_path, make_app, poller=mode) as loop:
        rows = a_row_the_connector_refused(loop, reruns)
        with loop.session() as session:
            held = session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).all()
            assert [q.identifier for q in held] == ["g1"] * (1 + reruns)
        fixed_by_hand_then_rerun(loop, rows)
        with loop.session() as session:
            task = session.exec(
                select(InboxEvent)
                .where(InboxEvent.event_type == "meterfix.remediate.quarantine_rerun")
                .order_by(col(InboxEvent.id).desc())
            ).first()
            held = session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).all()[-1]
        assert task is not None
        assert str(task.outcome).startswith("no quarantined rows to re-run")
        assert "; 1 left quarantined: billed as they are since" in str(task.outcome)
        assert held.taken_again is not None  # shown as taken again, with the version
        assert held.taken_again.startswith("usage/day.csv (ETag ")


@pytest.mark.parametrize(("mode", "reruns"), [("off", 0), ("index", 0), ("off", 1)])
def test_a_quarantined_row_stripes_connector_refused_again_from_a_new_version_is_billed(
    db_url: str,
    s3_endpoint: str,
    tmp_path: Path,
    make_app: Callable[[Settings], Flask],
    mode: str,
    reruns: int,
) -> None:
    """Stripe's connector refused a row (a customer it does not know) and meterfix
    quarantined it (and, `reruns`, a re-run before the rules were fixed quarantined it
    again). The file was uploaded again with the row as it was; the connector took the new
    version whole and refused the row again, after the operator had mapped the customer.
    The new import set's run left the row out as one another run over the object had
    quarantined, so it stayed held with the old version's content, and a quarantine re-run
    then left it as "billed since": never billed. (In index mode the poller marks it when it
    indexes the new version: here it had not got to it yet.) The new refusal is the new
    import set's: the row goes out once, corrected."""
    with running_loop(db_url, s3_endpoint, tmp_path, make_app, poller=mode) as loop:
        rows = a_row_the_connector_refused(loop, reruns)
        time.sleep(1)  # the new version's import comes after the row was quarantined
        rows.append(["ok2", rows[0][1], "api_requests", "cus_alice", "4"])
        _put(loop, "day.csv", usage_csv(rows))  # g1 as it was
        add_rules(loop, '"ghost-1" = "cus_alice"\n')
        loop.sandbox.connector_poll()  # ok2 billed, ok1 deduped, g1 refused again
        loop.drain()
        loop.sandbox.connector_poll()  # the corrected object
        assert sorted(loop.accepted()) == ["g1-mfx1", "ok1", "ok2"]
        assert max(originals_billed(loop).values()) == 1
        with loop.session() as session:
            held = session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).all()
            tasks = session.exec(
                select(InboxEvent)
                .where(InboxEvent.event_type == "meterfix.remediate.import_set_errors")
                .order_by(col(InboxEvent.id))
            ).all()
        assert [q.identifier for q in held] == ["g1"] * (1 + reruns)
        assert all(q.taken_again is not None for q in held), "no longer held"
        assert all(str(q.taken_again).startswith("day.csv (import set impset_") for q in held), (
            held[0].taken_again
        )
        assert "; 1 quarantined before refused again (marked taken again)" in str(tasks[-1].outcome)
        assert "left out" not in str(tasks[-1].outcome)
        # the re-run has nothing left to take
        assert rerun(loop)["rows"] == 0


def test_a_row_a_rerun_corrected_and_stripe_refused_again_from_a_new_version_is_not_resent(
    db_url: str, s3_endpoint: str, tmp_path: Path, make_app: Callable[[Settings], Flask]
) -> None:
    """The other side of the test above: the operator mapped the customer and re-ran the
    quarantine, so `g1-mfx1` was billed; the file, uploaded again with g1 as it was, is
    refused again for it. That refusal is not a row to correct: sent again it is billed twice
    (a day later, past Stripe's dedupe). Left out, and the row's entries stay as they were."""
    with running_loop(db_url, s3_endpoint, tmp_path, make_app, poller="off") as loop:
        rows = a_row_the_connector_refused(loop)
        add_rules(loop, '"ghost-1" = "cus_alice"\n')
        rerun(loop)
        loop.sandbox.connector_poll()  # the re-run's corrected object: g1-mfx1 billed
        time.sleep(1)
        rows.append(["ok2", rows[0][1], "api_requests", "cus_alice", "4"])
        _put(loop, "day.csv", usage_csv(rows))
        loop.sandbox.connector_poll()  # g1 refused again (the map is meterfix's, not Stripe's)
        loop.drain()
        loop.sandbox.connector_poll()
        assert sorted(loop.accepted()) == ["g1-mfx1", "ok1", "ok2"]
        with loop.session() as session:
            held = session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).all()
            [task] = session.exec(
                select(InboxEvent)
                .where(InboxEvent.event_type == "meterfix.remediate.import_set_errors")
                .order_by(col(InboxEvent.id).desc())
            ).all()[:1]
        assert [(q.identifier, q.rerun_id is not None, q.taken_again) for q in held] == [
            ("g1", True, None)
        ]
        assert "1 left out: another run over day.csv corrected or quarantined them" in str(
            task.outcome
        )


@pytest.mark.parametrize(
    ("name", "body"),
    [
        (
            "semi.csv",
            "identifier;timestamp;event_name;payload_stripe_customer_id;payload_value\n"
            "s1;{now};api_requests;cus_alice;5\ns2;{now};api_requests;cus_alice;6\n",
        ),
        (
            "array.jsonl",
            '[{{"identifier": "s1", "timestamp": {now}, "event_name": "api_requests", '
            '"payload": {{"stripe_customer_id": "cus_alice", "value": 5}}}},\n'
            '{{"identifier": "s2", "timestamp": {now}, "event_name": "api_requests", '
            '"payload": {{"stripe_customer_id": "cus_alice", "value": 6}}}}]\n',
        ),
    ],
)
def test_the_bundled_poller_repairs_a_file_stripe_would_fail_whole(
    loop: Loop, name: str, body: str
) -> None:
    """A file Stripe's importer fails as a whole (`;` delimiters, a JSON array named
    `.jsonl`), given to the bundled poller: it read every row as one field and meterfix
    quarantined each "no single active meter matches event_name ''", none billed. Now the
    poller fails the file whole, as Stripe does, and remediation repairs it as it repairs a
    file Stripe failed: every row billed once, under a derived identifier."""
    now = int(time.time()) - 60
    with bundled_poller(loop) as deps:
        _put(loop, name, body.format(now=now).encode())
        report = run_poll_pass(deps)
        assert (report.failed_files, report.sent) == (1, 0)
        loop.drain()  # the whole-file repair: a corrected file
        run_poll_pass(deps)  # which the poller imports
    assert sorted(loop.accepted()) == ["s1-mfx1", "s2-mfx1"]
    with loop.session() as session:
        assert session.exec(select(QuarantinedRow)).all() == []
        [task] = session.exec(
            select(InboxEvent).where(
                InboxEvent.event_type == "meterfix.remediate.import_set_failed"
            )
        ).all()
    assert str(task.outcome).startswith("remediated (import_set_failed:impset_local_")


def test_a_file_the_bundled_poller_cannot_read_raises_a_critical_alert_saying_why(
    loop: Loop,
) -> None:
    """A file no repair can read (JSON cut off): its import set was handed to the remediation
    of failed rows, which found no failed-records file and alerted that it was "gone; re-import
    the object to rebuild it", which re-importing never does. Now it goes to the whole-file
    repair, which says what is wrong with the file."""
    with bundled_poller(loop) as deps:
        _put(loop, "broken.json", b'[{"identifier": "x"')
        assert run_poll_pass(deps).deferred == 1  # ends mid-line: read once listed unchanged
        deps.clock = lambda: datetime.now(UTC) + timedelta(seconds=60)
        assert run_poll_pass(deps).failed_files == 1
        loop.drain()
    with loop.session() as session:
        alerts = session.exec(select(Alert).where(Alert.severity == "critical")).all()
    assert [a.kind for a in alerts] == ["remediation_input"]
    said = f"{alerts[0].subject} {alerts[0].message}"
    assert "cannot remediate" in said and "invalid JSON in item 1" in said
    assert "gone" not in said


def test_a_file_rewritten_so_stripe_would_fail_it_whole_sends_only_its_new_rows(
    loop: Loop,
) -> None:
    """The day's file, billed, rewritten with the rows so far and one more, but delimited by
    `;`: the poller fails the new version whole and the whole-file repair re-sent every row
    under a derived identifier (`a-mfx1`): the rows the first version sent were billed twice.
    The poller leaves out a row another version sent; so does the repair of a file it
    failed whole."""
    now = int(time.time()) - 60
    with bundled_poller(loop) as deps:
        _put(loop, "day.csv", usage_csv([["a", now, "api_requests", "cus_alice", "3"]]))
        run_poll_pass(deps)
        header = "identifier;timestamp;event_name;payload_stripe_customer_id;payload_value\n"
        rows = f"a;{now};api_requests;cus_alice;3\nb;{now};api_requests;cus_alice;4\n"
        _put(loop, "day.csv", (header + rows).encode())
        assert run_poll_pass(deps).failed_files == 1
        loop.drain()
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "b-mfx1"]
    with loop.session() as session:
        [task] = session.exec(
            select(InboxEvent).where(
                InboxEvent.event_type == "meterfix.remediate.import_set_failed"
            )
        ).all()
    assert str(task.outcome).endswith(
        "; 1 left out: sent before from the file (this version or another)"
    )


def test_a_file_rewritten_so_the_poller_fails_it_whole_leaves_rows_corrected_before(
    loop: Loop,
) -> None:
    """The day's file, its row `b` in milliseconds corrected (`b-mfx1`, billed) and `q` of a
    meter not made yet quarantined, rewritten with them as they were and one more, delimited
    by `;`: the whole-file repair held version 2's `q` beside version 1's, both waiting for a
    fix. Version 1's `q` is marked taken again (refused again with
    the whole file); `b` stays left out (its correction was billed)."""
    now = int(time.time()) - 60
    rows: list[list[object]] = [
        ["a", now, "api_requests", "cus_alice", "3"],
        ["b", now * 1000, "api_requests", "cus_alice", "4"],
        ["q", now, "not_a_meter", "cus_alice", "5"],
    ]
    with bundled_poller(loop) as deps:
        _put(loop, "day.csv", usage_csv(rows))
        run_poll_pass(deps)
        loop.drain()  # b corrected, q quarantined
        run_poll_pass(deps)  # b-mfx1 sent
        time.sleep(1)
        rows.append(["c", now, "api_requests", "cus_alice", "6"])
        _put(loop, "day.csv", usage_csv(rows).replace(b",", b";"))
        assert run_poll_pass(deps).failed_files == 1
        loop.drain()
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "b-mfx1", "c-mfx1"]
    held, task = _held_and_the_repair(loop)
    assert [(q.identifier, q.taken_again is not None) for q in held] == [
        ("q", True),
        ("q", False),
    ]
    outcome = str(task.outcome)
    assert "; 1 quarantined before refused again (marked taken again)" in outcome, outcome
    assert "; 1 left out: another run over usage/day.csv corrected or quarantined them" in outcome
    assert outcome.endswith("; 1 left out: sent before from the file (this version or another)")


def test_a_quarantine_file_of_ours_put_back_keeps_its_rows_identifiers_apart(
    loop: Loop,
) -> None:
    """A quarantine object copied back under the usage prefix (an S3 copy keeps its
    metadata: generation 1, kind quarantine): its rows hold the identifiers they came with.
    The poller's refused rows were traced as if generation 1 had appended `-mfx1`: the
    customer's `c-mfx1` and `c` both went out as `c-mfx2`, and Stripe kept one of them."""
    now = int(time.time()) - 60
    rows: list[list[object]] = [
        ["c-mfx1", now * 1000, "api_requests", "cus_alice", "5"],
        ["c", now * 1000, "api_requests", "cus_alice", "6"],
    ]
    loop.s3.put_object(
        Bucket=BUCKET,
        Key="usage/edited.quarantine.r1.csv",
        Body=usage_csv(rows),
        Metadata={"mfx-generation": "1", "mfx-kind": "quarantine"},
    )
    with bundled_poller(loop) as deps:
        run_poll_pass(deps)
        loop.drain()
        run_poll_pass(deps)
    events = {str(e["identifier"]): e["payload"]["value"] for e in loop.sandbox.meter_events()}
    assert events == {"c-mfx1-mfx2": "5", "c-mfx2": "6"}


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_a_file_under_a_long_key_is_billed_once_and_its_bad_rows_corrected(
    loop: Loop, delimiter: str
) -> None:
    """S3 keys run to 1,024 bytes; a key's last part past 255 bytes named the local copies
    the remediation downloads ("File name too long": retried until dead, never billed)."""
    now = int(time.time()) - 60
    name = "k" * 600 + ".csv"
    rows = [
        ["a", now, "api_requests", "cus_alice", "3"],
        ["b", now * 1000, "api_requests", "cus_alice", "4"],
    ]
    body = usage_csv(rows).replace(b",", delimiter.encode())
    with bundled_poller(loop) as deps:
        _put(loop, name, body)
        run_poll_pass(deps)
        loop.drain()
        run_poll_pass(deps)
        loop.drain()
    expected = ["a", "b-mfx1"] if delimiter == "," else ["a-mfx1", "b-mfx1"]
    assert sorted(loop.accepted()) == expected
    with loop.session() as session:
        tasks = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).all()
    assert [(t.status, t.last_error) for t in tasks] == [("done", None)]


def test_cli_reads_the_generation_of_a_long_named_file_from_its_shortened_sidecar(
    tmp_path: Path,
) -> None:
    """A corrected file of ours with a long name (output names run to 254 characters) has its
    lineage sidecar under a shortened name (`file_bucket.sidecar_path`: `<name>.meta.json`
    would pass 255 bytes). `meterfix remediate` looked only for `<name>.meta.json`: it took
    our own file for a customer's, and its rows got `-mfx1-mfx1` identifiers."""
    from service.adapters.file_bucket import FileBucket

    ms = 1764000000 * 1000
    body = f"{','.join(HEADER)},error_code\n"
    body += f"a-mfx1,{ms},api_requests,cus_1,5,timestamp_in_future\n"
    source = tmp_path / "upload.csv"
    source.write_text(body)
    name = "x" * 230 + ".corrected.r1.csv"
    (tmp_path / "bucket").mkdir()  # a bucket folder that is not there is refused
    FileBucket(tmp_path / "bucket").upload(source, name, {"mfx-generation": "1"})
    [sidecar] = [f.name for f in (tmp_path / "bucket").iterdir() if f.name != name]
    assert sidecar.endswith(".meta.json") and len(sidecar) < 255  # `<name>.meta.json` is 264
    summary = cli_remediate(tmp_path / "bucket" / name, tmp_path / "out")
    outputs = summary["outputs"]
    assert isinstance(outputs, dict)
    (corrected,) = outputs["corrected"]
    rows = list(csv.DictReader(io.StringIO(Path(corrected).read_text())))
    assert [r["identifier"] for r in rows] == ["a-mfx2"]


def test_a_file_named_in_many_non_ascii_characters_is_remediated(tmp_path: Path) -> None:
    """Bucket output: "names under 255 characters"; filesystems count a name's UTF-8 bytes.
    Output names were cut by characters: a file named in 80 CJK characters (244 bytes) gave
    a corrected name of 97 characters but 257 bytes, and every run of it failed writing it
    (`File name too long`): its rows never corrected (an S3 key of 100 such characters, which
    S3 takes, failed the worker's runs so)."""
    ms = 1764000000 * 1000
    body = f"{','.join(HEADER)},error_code\n"
    body += f"c1,{ms},api_requests,cus_1,5,timestamp_in_future\n"
    source = tmp_path / "in" / ("月次使用量" * 16 + ".csv")  # 80 characters, 244 bytes
    source.parent.mkdir()
    source.write_text(body)
    summary = cli_remediate(source, tmp_path / "out")
    outputs = summary["outputs"]
    assert isinstance(outputs, dict)
    (corrected,) = outputs["corrected"]
    assert len(Path(corrected).name.encode()) <= 254
    assert Path(corrected).name.startswith("月次使用量")
    rows = list(csv.DictReader(io.StringIO(Path(corrected).read_text())))
    assert [(r["identifier"], r["timestamp"]) for r in rows] == [("c1-mfx1", "1764000000")]


def test_the_bundled_poller_refuses_a_value_past_the_rules_precision(loop: Loop) -> None:
    """`[policy] value_precision = 2`: `meterfix validate` refuses `1.234`
    (`meter_event_value_too_many_digits`), but the poller's meters were read without the
    precision and it sent the row to Stripe as it was. It refuses it as remediation does,
    and the rounding the rules allow sends it once, rounded."""
    add_rules(loop, "[policy]\nvalue_precision = 2\nround_too_many_digits = true\n")
    now = int(time.time())
    rows = [["p1", now - 60, "api_requests", "cus_alice", "1.5"]]
    rows += [["p2", now - 60, "api_requests", "cus_alice", "1.234"]]
    with bundled_poller(loop) as deps:
        _put(loop, "day.csv", usage_csv(rows))
        report = run_poll_pass(deps)
        assert (report.sent, report.failed_rows) == (1, 1)
        loop.drain()  # the refused row: rounded
        run_poll_pass(deps)  # its corrected file
    assert sorted(loop.accepted()) == ["p1", "p2-mfx1"]
    with loop.session() as session:
        audit = session.exec(select(CorrectionAudit)).all()
    assert [(a.identifier, a.rule, a.before, a.after) for a in audit] == [
        ("p2", "round_value", "1.234", "1.23")
    ]


def test_the_runs_over_one_object_take_one_turn_whichever_name_they_give_it(db_url: str) -> None:
    """An import set names its object relative to the bucket's prefix (`day.csv`), a report's
    run by its key (`usage/day.csv`): on PostgreSQL the two locks had two names, and a report
    run and an import-set run over one object held them at once (both read no row handled,
    both corrected every row). One object, one lock; another object has its own there."""
    engine = make_engine(db_url)
    entered = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with one_run_an_object(engine, "usage/", "usage/day.csv"):
            entered.set()
            release.wait(10)

    first = threading.Thread(target=holder)
    first.start()
    try:
        assert entered.wait(10)
        took: list[str] = []

        def other(key: str) -> None:
            with one_run_an_object(engine, "usage/", key):
                took.append(key)

        waiting = threading.Thread(target=other, args=("day.csv",))
        waiting.start()
        waiting.join(1.5)
        assert took == [], "the same object's other name took the lock beside the first"
        if engine.dialect.name == "postgresql":  # SQLite: one lock for every object
            other("usage/night.csv")
            assert took == ["usage/night.csv"]
    finally:
        release.set()
        first.join(10)
    waiting.join(10)
    assert took[-1] == "day.csv"
    engine.dispose()


def test_a_row_a_fed_back_quarantine_file_sent_is_left_by_a_rerun_of_its_first_entry(
    loop: Loop,
) -> None:
    """README: a quarantine file fed back keeps its rows' identifiers, corrected as
    `<identifier>-mfx2`. The operator mapped the old event name and fed the quarantine file
    back (copied with its lineage, as `aws s3 cp` does): `x` billed as `x-mfx2`. A re-run of
    every quarantined row then sent the first entry as well, as `x-mfx1`: one row billed
    twice, under two identifiers. The entry is left, marked with what sent it."""
    with bundled_poller(loop) as deps:
        a_row_the_poller_refused(loop, deps)  # x quarantined: no meter `legacy_calls`
        add_rules(loop, '[event_names]\n"legacy_calls" = "api_requests"\n')
        [held] = [k for k in loop.objects() if k.endswith(".quarantine.r1.csv")]
        loop.s3.copy_object(
            Bucket=BUCKET, Key="usage/day-back.csv", CopySource={"Bucket": BUCKET, "Key": held}
        )
        run_poll_pass(deps)  # the fed-back file: x refused by the poller again, corrected
        loop.drain()
        run_poll_pass(deps)  # x-mfx2 sent
        assert sorted(loop.accepted()) == ["a", "x-mfx2"]
        queued = rerun(loop)
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "x-mfx2"]
    assert max(originals_billed(loop).values()) == 1
    with loop.session() as session:
        first = session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).first()
    assert first is not None and first.rerun_id is None
    assert (first.taken_again or "").endswith(", sent as x-mfx2 by the poller"), first.taken_again
    assert queued["queued"]
