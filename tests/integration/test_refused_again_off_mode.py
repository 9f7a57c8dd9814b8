"""A row Stripe's S3 connector refuses again from a new version of its object, with nothing
indexing the bucket (MFX_POLLER=off, the default): the connector (the sandbox) imports every
version whole, each as its own import set.

Import set 1's run quarantined `x1`. The customer uploads the file again, `x1` still in it;
the connector refuses it again and import set 2's failed-records file names it. That is a
new refusal: the quarantined row of import set 1 is marked taken again (by import set 2)
and import set 2's run remediates `x1` from its own failed records. Left out as "handled
elsewhere", it stayed quarantined with version 1's content, and a quarantine re-run then
left it as billed since (the bucket's version holds it): billed never. A row import set 1's
run corrected is still left out (its correction was billed; corrected again, billed twice).
In index mode the same holds for a row an error report's run quarantined when the import set
comes before the poller indexed the new version (nothing had marked the row yet). A new
version the connector fails whole is a refusal of all its rows: its repair marks `x1` the
same way, and leaves out the rows another version took (billed) or another run corrected.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlmodel import col, select

from service.config import PollerMode, Settings
from service.models import Alert, CorrectionAudit, InboxEvent, QuarantinedRow, RemediationRun
from service.models._types import as_utc, utcnow
from service.models.poller import BucketObject
from service.poller.passes import build_poller_deps, run_poll_pass
from service.runtime import Runtime
from tests.integration.test_e2e import BUCKET, RULES, Loop, render, running_loop

NAME = "usage.csv"
KEY = f"usage/{NAME}"
TASK = "meterfix.remediate.import_set_errors"


@pytest.fixture
def loop(
    db_url: str,
    s3_endpoint: str,
    tmp_path: Path,
    make_app: Callable[[Settings], Flask],
) -> Iterator[Loop]:
    # MFX_POLLER=off: nothing indexes the bucket; data problems come in the failed records
    with running_loop(db_url, s3_endpoint, tmp_path, make_app, poller=PollerMode.OFF) as running:
        yield running


def _rows(now: int, x1: dict[str, Any], *extra: str) -> list[dict[str, Any]]:
    base = {"timestamp": now, "event_name": "api_requests", "customer": "cus_alice"}
    rows: list[dict[str, Any]] = [{**base, "identifier": "ok1", "value": "3"}]
    rows.append({**base, "identifier": "c1", "value": "1,234"})  # corrected by import set 1
    rows.append({**base, "identifier": "x1", "value": "5", **x1})
    rows += [{**base, "identifier": i, "value": "2"} for i in extra]  # new usage
    return rows


def _put(loop: Loop, rows: list[dict[str, Any]]) -> None:
    loop.s3.put_object(Bucket=BUCKET, Key=KEY, Body=render(rows, "csv"))


def _corrected(loop: Loop) -> list[tuple[str, str, str]]:
    """(identifier, customer, value) of every row of every corrected object in the bucket."""
    found = []
    for key, body in sorted(loop.objects().items()):
        if key.startswith("usage/corrected/") and key.endswith(".csv"):
            for row in csv.DictReader(io.StringIO(body.decode())):
                found.append(
                    (row["identifier"], row["payload_stripe_customer_id"], row["payload_value"])
                )
    return sorted(found)


def _held(loop: Loop) -> list[tuple[str, str, str | None, str | None]]:
    """(identifier, value as quarantined, taken_again, run key) of every quarantined row."""
    with loop.session() as session:
        rows = session.exec(
            select(QuarantinedRow, RemediationRun.run_key)
            .join(RemediationRun, col(RemediationRun.id) == col(QuarantinedRow.run_id))
            .order_by(col(QuarantinedRow.id))
        ).all()
    return [(str(q.identifier), _value(q.record), q.taken_again, run_key) for q, run_key in rows]


def _value(record: Any) -> str:
    payload = record.get("payload") if isinstance(record, dict) else None
    if isinstance(payload, dict):
        return str(payload.get("value"))
    return str(record.get("payload_value") if isinstance(record, dict) else record)


def _outcomes(loop: Loop) -> list[str]:
    with loop.session() as session:
        tasks = session.exec(
            select(InboxEvent).where(InboxEvent.event_type == TASK).order_by(col(InboxEvent.id))
        ).all()
    return [str(task.outcome) for task in tasks]


def _import_set_ids(loop: Loop) -> list[str]:
    """The ids of the import sets of usage.csv (not of our corrected objects), oldest first."""
    sets = [s for s in loop.sandbox.import_sets() if s["source_object"] == NAME]
    return [str(s["id"]) for s in sorted(sets, key=lambda s: (s["created"], s["id"]))]


def _poll(loop: Loop) -> dict[str, Any]:
    """One pass of Stripe's connector; the event of usage.csv's import set (the pass may
    import our corrected objects too)."""
    [event] = [
        e for e in loop.sandbox.connector_poll() if e["data"]["object"]["source_object"] == NAME
    ]
    return event


def _first_version(loop: Loop, x1: dict[str, Any]) -> int:
    """Version 1: import set 1 corrects c1 and quarantines x1."""
    now = int(time.time()) - 60
    _put(loop, _rows(now, x1))
    event = _poll(loop)
    assert event["data"]["object"]["result"]["errors"]["row_count"] == 2  # c1, x1
    loop.drain()
    assert _corrected(loop) == [("c1-mfx1", "cus_alice", "1234")]
    [(identifier, _, taken, _)] = _held(loop)
    assert (identifier, taken) == ("x1", None)
    time.sleep(1.1)  # S3 and Stripe stamp whole seconds: the next version comes later
    return now


def _second_version(loop: Loop, now: int, x1: dict[str, Any]) -> str:
    """Version 2, c1 and x1 still in it, and a new row: the connector takes it whole (ok1
    deduped within the day, n1 billed, c1 and x1 refused again). Its event's id."""
    _put(loop, _rows(now, x1, "n1"))
    event = _poll(loop)
    assert event["data"]["object"]["result"]["errors"]["row_count"] == 2  # c1, x1 again
    loop.drain()
    return str(event["id"])


def test_a_quarantined_row_refused_again_from_a_new_version_is_corrected(loop: Loop) -> None:
    """x1's customer is unknown; the operator maps it before the customer uploads the file
    again: import set 2's run corrects x1 (billed as `x1-mfx1`)."""
    now = _first_version(loop, {"customer": "acme-99"})
    Path(loop.settings.mfx_rules).write_text(RULES + '"acme-99" = "cus_acme"\n')
    _second_version(loop, now, {"customer": "acme-99"})
    first, second = _import_set_ids(loop)
    assert _corrected(loop) == [("c1-mfx1", "cus_alice", "1234"), ("x1-mfx1", "cus_acme", "5")]
    [(identifier, value, taken, run_key)] = _held(loop)
    assert (identifier, value, run_key.split(":")[1]) == ("x1", "5", first)
    assert taken is not None and taken.startswith(f"{NAME} (import set {second}, "), taken
    with loop.session() as session:
        audit = sorted(
            (a.identifier, a.new_identifier) for a in session.exec(select(CorrectionAudit))
        )
    assert audit == [("c1", "c1-mfx1"), ("x1", "x1-mfx1")]
    _, outcome = _outcomes(loop)
    assert outcome.startswith(f"remediated (import_set:{second}:"), outcome
    assert "; 1 left out: another run over usage.csv corrected or quarantined them" in outcome
    assert (
        "; 1 quarantined before refused again (marked taken again): remediated from this version"
        in outcome
    )
    loop.sandbox.connector_poll()  # Stripe imports the corrected objects
    assert sorted(loop.accepted()) == ["c1-mfx1", "n1", "ok1", "x1-mfx1"]  # each once


def test_a_quarantined_row_refused_again_unfixable_is_quarantined_anew(loop: Loop) -> None:
    """x1's value is no number, in both versions (another text in version 2): import set 2's
    run quarantines it anew, with version 2's content; version 1's row is taken again."""
    now = _first_version(loop, {"value": "abc"})
    _second_version(loop, now, {"value": "xyz"})
    first, second = _import_set_ids(loop)
    assert _corrected(loop) == [("c1-mfx1", "cus_alice", "1234")]  # c1 corrected once only
    [old, new] = _held(loop)
    assert (old[0], old[1], old[3].split(":")[1]) == ("x1", "abc", first)
    assert old[2] is not None and old[2].startswith(f"{NAME} (import set {second}, "), old
    assert (new[0], new[1], new[2], new[3].split(":")[1]) == ("x1", "xyz", None, second)
    _, outcome = _outcomes(loop)
    assert "; 1 left out: another run over usage.csv corrected or quarantined them" in outcome
    assert "; 1 quarantined before refused again (marked taken again)" in outcome


def test_import_set_2_s_task_retried_after_a_crash_gives_the_same_result(loop: Loop) -> None:
    """Import set 2's run marks version 1's x1 taken again, then fails to upload (the
    bucket is gone for a while): the task is retried, finds the row marked already (this
    try marks nothing), and remediates x1 all the same; delivered again, nothing changes."""
    now = _first_version(loop, {"value": "abc"})
    _put(loop, _rows(now, {"value": "xyz"}, "n1"))
    event = _poll(loop)
    kept = loop.objects()
    for key in kept:
        loop.s3.delete_object(Bucket=BUCKET, Key=key)
    loop.s3.delete_bucket(Bucket=BUCKET)
    report = loop.worker().drain()
    assert [event_id for event_id, _ in report.retrying] == [
        f"mfx_task_import_set_errors_{_import_set_ids(loop)[1]}"
    ]
    taken = _held(loop)[0][2]  # version 1's x1 (the crashed try's rows go when it is redone)
    assert taken is not None and f"(import set {_import_set_ids(loop)[1]}, " in taken
    loop.s3.create_bucket(Bucket=BUCKET)
    for key, body in kept.items():
        loop.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    with loop.session() as session:
        [task] = session.exec(
            select(InboxEvent)
            .where(InboxEvent.event_type == TASK)
            .where(InboxEvent.status == "pending")
        ).all()
        task.next_attempt_at = None  # due now, not after its backoff
        session.add(task)
        session.commit()
    loop.drain()
    first, second = _import_set_ids(loop)
    [old, new] = _held(loop)
    assert (old[0], old[1], old[2], old[3].split(":")[1]) == ("x1", "abc", taken, first)
    assert (new[0], new[1], new[2], new[3].split(":")[1]) == ("x1", "xyz", None, second)
    assert _corrected(loop) == [("c1-mfx1", "cus_alice", "1234")]
    outcome = _outcomes(loop)[-1]
    assert outcome.startswith(f"remediated (import_set:{second}:"), outcome
    assert outcome.endswith(
        "; 1 quarantined before refused again (marked taken again): remediated from this version"
        "; 1 left out: another run over usage.csv corrected or quarantined them"
    ), outcome
    held, outcomes = _held(loop), _outcomes(loop)
    with loop.session() as session:
        runs = [(r.run_key, r.status) for r in session.exec(select(RemediationRun))]
    assert loop.sandbox.deliver(str(event["id"]), f"{loop.service_url}/webhooks")["status"] == 200
    loop.drain()
    assert (_held(loop), _corrected(loop), _outcomes(loop)) == (
        held,
        [("c1-mfx1", "cus_alice", "1234")],
        outcomes,
    )
    with loop.session() as session:
        assert [(r.run_key, r.status) for r in session.exec(select(RemediationRun))] == runs


def test_an_older_import_set_delivered_late_marks_no_newer_run_s_rows(loop: Loop) -> None:
    """Import set 1's event comes after import set 2's run quarantined x1 (and the customer
    deleted the file since, so no version in the bucket tells them apart): import set 1 is
    the older refusal; it leaves x1 to import set 2's run and marks nothing."""
    sandbox = loop.sandbox_app.extensions["sandbox"]
    now = int(time.time()) - 60
    _put(loop, _rows(now, {"value": "abc"}))
    url, sandbox.webhook_url = sandbox.webhook_url, None  # import set 1's event comes late
    late = _poll(loop)
    sandbox.webhook_url = url
    time.sleep(1.1)
    _put(loop, _rows(now, {"value": "xyz"}, "n1"))
    _poll(loop)
    loop.drain()  # import set 2's run: c1 corrected, x1 quarantined ("xyz")
    first, second = _import_set_ids(loop)
    loop.s3.delete_object(Bucket=BUCKET, Key=KEY)
    assert loop.sandbox.deliver(str(late["id"]), f"{loop.service_url}/webhooks")["status"] == 200
    loop.drain()
    [(identifier, value, taken, run_key)] = _held(loop)
    assert (identifier, value, taken, run_key.split(":")[1]) == ("x1", "xyz", None, second)
    assert _corrected(loop) == [("c1-mfx1", "cus_alice", "1234")]
    outcome = _outcomes(loop)[-1]
    assert outcome.startswith(f"remediated (import_set:{first}:"), outcome
    assert "; 2 left out: another run over usage.csv corrected or quarantined them" in outcome
    assert "refused again" not in outcome  # nothing marked


def test_an_earlier_import_set_s_run_done_after_the_later_one_s_event_still_counts_as_earlier(
    loop: Loop,
) -> None:
    """The worker was down while Stripe's connector took both versions (and the customer
    deleted the file before it came back, so no version in the bucket holds x1): import set
    1's run quarantines x1 after import set 2's event. Import set 1's event came first: x1
    is import set 2's new refusal all the same (told by the rows' time alone, it was left
    out as handled: never billed)."""
    sandbox = loop.sandbox_app.extensions["sandbox"]
    url, sandbox.webhook_url = sandbox.webhook_url, None  # nothing reaches meterfix yet
    now = int(time.time()) - 60
    _put(loop, _rows(now, {"value": "abc"}))
    first_event = _poll(loop)
    time.sleep(1.1)
    _put(loop, _rows(now, {"value": "1,234"}, "n1"))  # x1 still refused: a format problem
    second_event = _poll(loop)
    sandbox.webhook_url = url
    loop.s3.delete_object(Bucket=BUCKET, Key=KEY)
    time.sleep(1.1)  # the worker comes back after import set 2's event
    for event in (first_event, second_event):
        assert loop.sandbox.deliver(str(event["id"]), url)["status"] == 200
    loop.drain()
    first, second = _import_set_ids(loop)
    assert _corrected(loop) == [
        ("c1-mfx1", "cus_alice", "1234"),
        ("x1-mfx1", "cus_alice", "1234"),
    ]
    [(identifier, value, taken, run_key)] = _held(loop)
    assert (identifier, value, run_key.split(":")[1]) == ("x1", "abc", first)
    assert taken is not None and taken.startswith(f"{NAME} (import set {second}, "), taken
    outcome = _outcomes(loop)[-1]
    assert outcome.startswith(f"remediated (import_set:{second}:"), outcome
    assert outcome.endswith(
        "; 1 quarantined before refused again (marked taken again): remediated from this version"
        "; 1 left out: another run over usage.csv corrected or quarantined them"
    ), outcome


@pytest.fixture
def index_loop(
    db_url: str,
    s3_endpoint: str,
    tmp_path: Path,
    make_app: Callable[[Settings], Flask],
) -> Iterator[Loop]:
    """MFX_POLLER=index, data problems reported as Stripe reports them (thin events)."""
    with running_loop(
        db_url, s3_endpoint, tmp_path, make_app, poller=PollerMode.INDEX, data_errors="report"
    ) as running:
        yield running


def _reported_first_version(loop: Loop, x1: dict[str, Any]) -> int:
    """Version 1, indexed by the poller and taken by Stripe's connector: c1 in its
    failed-records file, x1 reported later and quarantined by the report's run."""
    runtime = Runtime(loop.settings)
    try:
        deps = build_poller_deps(runtime)
        now = int(time.time()) - 60
        _put(loop, _rows(now, x1))
        assert run_poll_pass(deps).indexed == 1
    finally:
        runtime.close()
    _poll(loop)
    loop.drain()
    assert loop.sandbox_app.extensions["sandbox"].flush_reports()
    loop.drain()  # the report's run
    [(identifier, _, taken, run_key)] = _held(loop)
    assert (identifier, taken, run_key.split(":")[0]) == ("x1", None, "error_report")
    return now


def test_a_row_a_report_s_run_quarantined_refused_again_before_indexing_is_corrected(
    index_loop: Loop,
) -> None:
    """Index mode, before the poller came to version 2: an error report's run quarantined
    x1 (its customer unknown); the customer fixes the customer by hand and uploads the file
    again, with a value Stripe refuses as a format problem; import set 2's failed records
    name x1. Its run marks the report run's row taken again and corrects x1 (`1,234`)."""
    loop = index_loop
    now = _reported_first_version(loop, {"customer": "ghost-9"})  # none mapped
    time.sleep(1.1)  # S3 and Stripe stamp whole seconds: the next version comes later
    _put(loop, _rows(now, {"value": "1,234"}, "n1"))  # not indexed yet
    event = _poll(loop)
    assert event["data"]["object"]["result"]["errors"]["row_count"] == 2  # c1, x1
    loop.drain()
    second = str(event["data"]["object"]["id"])
    assert _corrected(loop) == [("c1-mfx1", "cus_alice", "1234"), ("x1-mfx1", "cus_alice", "1234")]
    [(identifier, value, taken, _)] = _held(loop)
    assert (identifier, value) == ("x1", "5")
    assert taken is not None and taken.startswith(f"{NAME} (import set {second}, "), taken
    outcome = _outcomes(loop)[-1]
    assert outcome.startswith(f"remediated (import_set:{second}:"), outcome
    assert outcome.endswith(
        "; 1 quarantined before refused again (marked taken again): remediated from this version"
        "; 1 left out: another run over usage.csv corrected or quarantined them"
    ), outcome
    loop.sandbox.connector_poll()  # Stripe imports the corrected objects
    assert sorted(loop.accepted()) == ["c1-mfx1", "n1", "ok1", "x1-mfx1"]


FAILED_TASK = "meterfix.remediate.import_set_failed"


@pytest.mark.parametrize("versions", [1, 2])
def test_a_version_stripe_fails_whole_resends_only_rows_no_version_took(
    loop: Loop, versions: int
) -> None:
    """Version 2 is written with `;` delimiters: Stripe's connector fails it whole, and the
    whole-file repair re-sent every row under a derived identifier: `ok1`, billed from
    version 1, went out again as `ok1-mfx1` (billed twice), `c1`, corrected by import set
    1's run (`c1-mfx1`, billed), as `c1-mfx2`; and version 1's quarantined `x1` stayed held
    with its old content beside the new refusal's. Now the repair leaves out the rows another
    version took and the rows another run over the object corrected, and marks version 1's
    `x1` taken again, remediating it from version 2. `versions`: a third version failing
    whole too; rows the second one's repair sent count as handled by that run (n1: billed as
    `n1-mfx1`)."""
    now = _first_version(loop, {"value": "abc"})
    loop.s3.put_object(
        Bucket=BUCKET, Key=KEY, Body=render(_rows(now, {"value": "xyz"}, "n1"), "csv", ";")
    )
    [event] = [
        e for e in loop.sandbox.connector_poll() if e["data"]["object"]["source_object"] == NAME
    ]
    assert event["type"] == "data_management.import_set.failed"
    loop.drain()
    if versions == 2:
        time.sleep(1.1)
        body = render(_rows(now, {"value": "xyz"}, "n1", "n2"), "csv", ";")
        loop.s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)
        [event] = [
            e for e in loop.sandbox.connector_poll() if e["data"]["object"]["source_object"] == NAME
        ]
        loop.drain()
    *_, second = _import_set_ids(loop)
    new_rows = [("n1-mfx1", "cus_alice", "2"), ("n2-mfx1", "cus_alice", "2")][:versions]
    assert _corrected(loop) == [("c1-mfx1", "cus_alice", "1234"), *new_rows]
    *old, new = _held(loop)  # version 1's (and version 2's repair's), marked taken again
    assert [(o[0], o[1]) for o in old] == [("x1", "abc"), ("x1", "xyz")][:versions]
    assert all(str(o[2]).startswith(f"{NAME} (import set ") for o in old), old
    assert (new[0], new[1], new[2]) == ("x1", "xyz", None), "held anew, from the last version"
    with loop.session() as session:
        [*_, task] = session.exec(
            select(InboxEvent)
            .where(InboxEvent.event_type == FAILED_TASK)
            .order_by(col(InboxEvent.id))
        ).all()
    outcome = str(task.outcome)
    assert outcome.startswith(f"remediated (import_set_failed:{second})"), outcome
    # ok1; c1 (and n1, which version 2's repair sent as it came: its audit says so since
    # the resend lines, where it was found through the connector's versions before)
    assert "; 1 left out: Stripe's connector took them from another version" in outcome
    ran = f"; {versions} left out: another run over usage.csv corrected or quarantined them"
    assert ran in outcome
    loop.sandbox.connector_poll()  # Stripe imports the corrected objects
    billed = sorted(["c1-mfx1", "ok1", *[n for n, _, _ in new_rows]])
    assert sorted(loop.accepted()) == billed  # each once


def test_a_version_stripe_fails_whole_waits_for_a_person_when_an_earlier_copy_is_gone(
    loop: Loop,
) -> None:
    """Stripe no longer gives its copy of version 1: which rows of version 2 it took cannot
    be told, and re-sent they would be billed twice. The task is not retried: a critical
    alert says why; nothing is sent."""
    now = _first_version(loop, {"value": "abc"})
    [first] = _import_set_ids(loop)
    [copy] = [s["file"] for s in loop.sandbox.import_sets() if s["id"] == first]
    state = loop.sandbox_app.extensions["sandbox"].state
    with state.lock:
        del state.files[copy]  # expired, say
    loop.s3.put_object(
        Bucket=BUCKET, Key=KEY, Body=render(_rows(now, {"value": "xyz"}), "csv", ";")
    )
    loop.sandbox.connector_poll()
    loop.drain()
    with loop.session() as session:
        [task] = session.exec(select(InboxEvent).where(InboxEvent.event_type == FAILED_TASK)).all()
        alerts = session.exec(select(Alert).where(Alert.severity == "critical")).all()
    why = f"Stripe no longer gives its file {copy} of the version of {NAME} import set {first}"
    assert str(task.outcome).startswith(f"not remediated: {why}"), task.outcome
    assert len(alerts) == 1 and why in alerts[0].message, [a.message for a in alerts]
    assert _corrected(loop) == [("c1-mfx1", "cus_alice", "1234")]  # nothing new
    assert [(h[0], h[1], h[2]) for h in _held(loop)] == [("x1", "abc", None)]


def test_a_row_a_report_refused_is_remediated_from_a_version_stripe_fails_whole(
    index_loop: Loop,
) -> None:
    """Stripe's connector took version 1 with x1 in it (no meter for its event name yet) and
    reported it later: the report's run quarantined it. The operator makes the meter; the
    file, uploaded again with `;` delimiters, fails whole. x1 is in Stripe's copy of version
    1 but in none of its failed records: taken by the look of it, though the report refused
    it after. The repair sends it (`x1-mfx1`), and the report run's row is marked taken
    again; `ok1` (taken, never refused) and `c1` (corrected) stay left out."""
    loop = index_loop
    now = _reported_first_version(loop, {"event_name": "tokens_x"})  # no meter
    loop.sandbox.create_meter("tokens_x")
    time.sleep(1.1)
    body = render(_rows(now, {"event_name": "tokens_x"}, "n1"), "csv", ";")
    loop.s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)
    event = _poll(loop)
    assert event["type"] == "data_management.import_set.failed"
    loop.drain()
    assert _corrected(loop) == [
        ("c1-mfx1", "cus_alice", "1234"),
        ("n1-mfx1", "cus_alice", "2"),
        ("x1-mfx1", "cus_alice", "5"),
    ]
    [(identifier, _, taken, _)] = _held(loop)
    assert identifier == "x1" and str(taken).startswith(f"{NAME} (import set "), taken
    loop.sandbox.connector_poll()  # Stripe imports the corrected objects
    assert sorted(loop.accepted()) == ["c1-mfx1", "n1-mfx1", "ok1", "x1-mfx1"]


def test_a_row_fixed_by_hand_and_taken_before_a_version_fails_whole_is_not_sent_again(
    loop: Loop,
) -> None:
    """x1, quarantined from version 1, was fixed by hand in version 2, which Stripe's
    connector took (x1 billed); version 3, rewritten with `;`, fails whole. Version 1's
    refusal came before version 2 took x1: the repair leaves it out (re-sent, billed twice)
    and marks version 1's row taken again, by version 2 (no longer waiting for a fix)."""
    now = _first_version(loop, {"value": "abc"})
    _put(loop, _rows(now, {"value": "5"}))
    event = _poll(loop)
    assert event["data"]["object"]["result"]["errors"]["row_count"] == 1  # c1 only
    loop.drain()  # c1 left out: import set 1's run corrected it
    time.sleep(1.1)
    body = render(_rows(now, {"value": "5"}, "n1"), "csv", ";")
    loop.s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)
    assert _poll(loop)["type"] == "data_management.import_set.failed"
    loop.drain()
    assert _corrected(loop) == [("c1-mfx1", "cus_alice", "1234"), ("n1-mfx1", "cus_alice", "2")]
    [(identifier, value, taken, _)] = _held(loop)
    assert (identifier, value) == ("x1", "abc")
    second = str(event["data"]["object"]["id"])
    assert str(taken).startswith(f"{NAME} (import set {second}, taken "), taken
    with loop.session() as session:
        [task] = session.exec(select(InboxEvent).where(InboxEvent.event_type == FAILED_TASK)).all()
    assert "; 2 left out: Stripe's connector took them from another version" in str(task.outcome)
    loop.sandbox.connector_poll()
    assert sorted(loop.accepted()) == ["c1-mfx1", "n1-mfx1", "ok1", "x1"]  # each once


def test_rows_a_version_took_and_a_later_one_refused_are_not_sent_again(loop: Loop) -> None:
    """The day's file is written again a day later, past Stripe's dedupe, after its meter
    was archived: Stripe's connector refuses the rows version 1 billed (`archived_meter`)
    with the new one. The run re-routed them to the successor meter: `ok1-mfx1` and
    `x1-mfx1` on `api_v2` beside the `ok1` and `x1` billed on `api_requests`. Only `n1`, new
    in version 2, is usage left unbilled; the rows version 1 took are left out, and `c1`
    (import set 1's run corrected it) stays left out too."""
    Path(loop.settings.mfx_rules).write_text(
        RULES + '[meter_successors]\n"api_requests" = "api_v2"\n'
    )
    loop.sandbox.create_meter("api_v2")
    now = int(time.time()) - 60
    _put(loop, _rows(now, {}))
    _poll(loop)
    loop.drain()  # c1 corrected
    loop.sandbox.connector_poll()
    assert sorted(loop.accepted()) == ["c1-mfx1", "ok1", "x1"]
    state = loop.sandbox_app.extensions["sandbox"].state
    with state.lock:  # a day passes: Stripe dedupes identifiers for 24 hours only
        state.identifiers = {i: at - 25 * 3600 for i, at in state.identifiers.items()}
    [meter] = [m for m in loop.sandbox.meters() if m["event_name"] == "api_requests"]
    loop.sandbox.deactivate_meter(meter["id"])
    time.sleep(1.1)
    _put(loop, _rows(now, {}, "n1"))
    event = _poll(loop)
    assert event["data"]["object"]["result"]["errors"]["row_count"] == 4  # all refused
    loop.drain()
    assert _corrected(loop) == [("c1-mfx1", "cus_alice", "1234"), ("n1-mfx1", "cus_alice", "2")]
    outcome = _outcomes(loop)[-1]
    assert "; 2 left out: Stripe's connector took them from another version" in outcome
    assert "; 1 left out: another run over usage.csv corrected or quarantined them" in outcome
    loop.sandbox.connector_poll()
    assert sorted(loop.accepted()) == ["c1-mfx1", "n1-mfx1", "ok1", "x1"]  # each once


@pytest.mark.parametrize(("more", "ghost"), [(0, False), (4, False), (4, True)])
def test_rows_a_version_took_a_day_before_a_report_are_not_sent_again(
    index_loop: Loop, more: int, ghost: bool
) -> None:
    """Index mode, data errors reported: the day's file written again a day later, past
    Stripe's dedupe, after its meter was archived. Stripe's connector takes version 2 whole
    and refuses its rows of the archived meter, the rows version 1 billed among them, and
    reports them. The report's run re-routed them all to the successor meter: `ok1-mfx1` and
    `x1-mfx1` on `api_v2` beside the `ok1` and `x1` billed on `api_requests`. A version
    uploaded more than a day before the report's window (`WINDOW_BEFORE`) is not what the
    report is about: Stripe's connector took its rows then (billed, or refused and reported
    then). Only `n1`, new in version 2, is usage left unbilled. `more`: rows the report counts
    beyond its samples (Stripe samples 3 a code) that version 1 billed too: left out and
    counted as found (not "partial: found 4 of 7"). `ghost`: one more, `g`, that version 1
    held with a customer Stripe does not know: refused then, quarantined by the report's run,
    never billed, and refused again with version 2 (beyond the samples): not counted as
    billed by version 1 (the report stays partial, found 7 of 8, its alert says so)."""
    loop = index_loop
    old = [f"o{n}" for n in range(1, more + 1)]
    now = int(time.time()) - 60
    g = {"timestamp": now, "event_name": "api_requests", "customer": "ghost-9"}
    extra = [{**g, "identifier": "g", "value": "2"}] if ghost else []
    Path(loop.settings.mfx_rules).write_text(
        RULES + '[meter_successors]\n"api_requests" = "api_v2"\n'
    )
    loop.sandbox.create_meter("api_v2")
    runtime = Runtime(loop.settings)
    try:
        deps = build_poller_deps(runtime)
        _put(loop, _rows(now, {}, *old) + extra)
        assert run_poll_pass(deps).indexed == 1
        _poll(loop)
        loop.drain()  # c1 corrected
        if ghost:  # g reported, and quarantined: no rule maps ghost-9
            assert loop.sandbox_app.extensions["sandbox"].flush_reports()
            loop.drain()
            assert [h[0] for h in _held(loop)] == ["g"]
        loop.sandbox.connector_poll()
        assert sorted(loop.accepted()) == sorted(["c1-mfx1", "ok1", "x1", *old])
        day = timedelta(hours=25)  # a day passes
        state = loop.sandbox_app.extensions["sandbox"].state
        with state.lock:  # Stripe dedupes identifiers for 24 hours only
            state.identifiers = {
                i: at - int(day.total_seconds()) for i, at in state.identifiers.items()
            }
        with loop.session() as session:  # the poller listed version 1 a day ago
            [first] = session.exec(select(BucketObject).where(BucketObject.key == KEY)).all()
            first.last_modified = (as_utc(first.last_modified) or utcnow()) - day
            session.add(first)
            session.commit()
        [meter] = [m for m in loop.sandbox.meters() if m["event_name"] == "api_requests"]
        loop.sandbox.deactivate_meter(meter["id"])
        time.sleep(1.1)
        _put(loop, _rows(now, {}, *old) + extra + _rows(now, {}, "n1")[3:])
        assert run_poll_pass(deps).indexed == 2  # version 2, import set 1's corrected file
    finally:
        runtime.close()
    _poll(loop)
    loop.drain()  # import set 2: c1 (format) left out, corrected by import set 1's run
    assert loop.sandbox_app.extensions["sandbox"].flush_reports()
    loop.drain()  # the report's run
    assert _corrected(loop) == [("c1-mfx1", "cus_alice", "1234"), ("n1-mfx1", "cus_alice", "2")]
    with loop.session() as session:
        *_, task = session.exec(  # version 2's report (and version 1's, `ghost`)
            select(InboxEvent)
            .where(InboxEvent.event_type == "meterfix.remediate.error_report")
            .order_by(col(InboxEvent.id))
        ).all()
    outcome = str(task.outcome)
    reported = 3 + more  # ok1, x1, n1 and the old rows
    if ghost:
        assert outcome.startswith(f"partial: remediated {reported} row(s) of {reported + 1}")
    else:
        assert outcome.startswith(f"remediated {reported} row(s) for {reported} reported")
    assert outcome.endswith(
        f"; {reported - 1} first held by a version uploaded more than a day before the "
        "report's window: Stripe's connector took them from it then, left out"
    ), outcome
    loop.sandbox.connector_poll()
    billed = ["c1-mfx1", "n1-mfx1", "ok1", "x1", *old]
    assert sorted(loop.accepted()) == sorted(billed)  # each once
