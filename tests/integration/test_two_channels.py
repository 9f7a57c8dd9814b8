"""One refused row reported by both of Stripe's channels (MFX_POLLER=index: Stripe's S3
connector, the sandbox, imports the bucket): a row with a format problem (a value that is not
a number) goes into the import set's failed-records file, and the same row also fails our
validation first for a data problem Stripe reports for other rows of the object (their meter
is archived, a successor configured), so the meter error report's run over the object
selects it too. Whichever run
comes second must leave it to the first: both would write `<id>-mfx1`, and two corrected
objects imported more than a day apart bill it twice (Stripe dedupes for 24 hours only)."""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from service.models import (
    Alert,
    CorrectionAudit,
    ErrorReport,
    InboxEvent,
    QuarantinedRow,
    RemediationRun,
)
from service.poller.passes import PollerDeps, run_poll_pass
from tests.integration import test_e2e_index
from tests.integration.test_e2e import BUCKET, RULES, Loop, render

# MFX_POLLER=index: Stripe's S3 connector (the sandbox) imports, meterfix indexes
loop, deps = test_e2e_index.loop, test_e2e_index.deps

KEY = "usage/both.csv"
ARCHIVED = [f"arch{n}" for n in range(1, 6)]  # an archived meter (reported, sampled)


def _object(now: int) -> bytes:
    base = {"timestamp": now - 60, "event_name": "api_requests", "customer": "cus_alice"}
    rows: list[dict[str, Any]] = [{**base, "identifier": i, "value": "5"} for i in ARCHIVED]
    # a value that is not a number (the failed-records file) for the archived meter (what
    # the report is about): both channels name it, and both runs can correct it
    rows.append({**base, "identifier": "dual", "value": "1,234"})
    # a value that cannot be fixed, same meter: quarantined by the first run only
    rows.append({**base, "identifier": "bad", "value": "abc"})
    return render(rows, "csv")


def _corrected_identifiers(loop: Loop) -> Counter[str]:
    """Every identifier in every corrected object in the bucket, with how often it occurs."""
    found: Counter[str] = Counter()
    for key, body in loop.objects().items():
        if key.startswith("usage/corrected/") and key.endswith(".csv"):
            found.update(row["identifier"] for row in csv.DictReader(io.StringIO(body.decode())))
    return found


def _quarantine_files(loop: Loop) -> list[str]:
    """The identifiers in every quarantine file in the bucket (repeats kept)."""
    found = []
    for key, body in loop.objects().items():
        if key.startswith("usage/quarantine/") and key.endswith(".quarantine.r1.csv"):
            found += [row["identifier"] for row in csv.DictReader(io.StringIO(body.decode()))]
    return found


@pytest.fixture
def indexed(loop: Loop, deps: PollerDeps) -> Iterator[Loop]:
    """The meter is archived (its successor configured), then the object is uploaded and
    indexed; Stripe's connector has not taken it yet."""
    Path(loop.settings.mfx_rules).write_text(
        RULES + '[meter_successors]\n"api_requests" = "api_v2"\n'
    )
    loop.sandbox.create_meter("api_v2")
    [meter] = [m for m in loop.sandbox.meters() if m["event_name"] == "api_requests"]
    loop.sandbox.deactivate_meter(meter["id"])
    time.sleep(1.1)  # the object is uploaded after the meter was archived (whole seconds)
    loop.s3.put_object(Bucket=BUCKET, Key=KEY, Body=_object(int(time.time())))
    assert run_poll_pass(deps).indexed == 1  # meterfix indexes the object; it sends nothing
    yield loop


def _import_set_first(loop: Loop) -> str:
    [event] = loop.sandbox.connector_poll()  # Stripe imports: `dual` and `bad` in a file
    assert event["data"]["object"]["result"]["errors"]["row_count"] == 2
    loop.drain()  # the failed-records file's run
    assert loop.sandbox_app.extensions["sandbox"].flush_reports()  # archived_meter, sampled
    loop.drain()  # the report's run
    return "error_report"


def _report_first(loop: Loop) -> str:
    sandbox = loop.sandbox_app.extensions["sandbox"]
    url, sandbox.webhook_url = sandbox.webhook_url, None  # the import set's event comes late
    [event] = loop.sandbox.connector_poll()
    sandbox.webhook_url = url
    assert sandbox.flush_reports()
    loop.drain()  # the report's run
    assert loop.sandbox.deliver(str(event["id"]), f"{loop.service_url}/webhooks")["status"] == 200
    loop.drain()  # the failed-records file's run
    return "import_set.succeeded"


@pytest.mark.parametrize("order", [_import_set_first, _report_first], ids=["file", "report"])
def test_a_row_both_channels_name_is_remediated_by_one_run(
    indexed: Loop, order: Callable[[Loop], str]
) -> None:
    loop = indexed
    second = order(loop)
    derived = [f"{i}-mfx1" for i in [*ARCHIVED, "dual"]]
    assert _corrected_identifiers(loop) == Counter(derived), "each row corrected once"
    assert _quarantine_files(loop) == ["bad"], "quarantined once"
    with loop.session() as session:
        runs = {run.trigger: run for run in session.exec(select(RemediationRun)).all()}
        held = [(q.identifier, q.run_id) for q in session.exec(select(QuarantinedRow))]
        audit = {(a.identifier, a.run_id) for a in session.exec(select(CorrectionAudit))}
        reports = [r.status for r in session.exec(select(ErrorReport))]
        tasks = [
            (t.event_id, t.outcome)
            for t in session.exec(select(InboxEvent).where(InboxEvent.style == "task"))
        ]
    outcome = {kind: o for kind in ("error_report", "import_set") for i, o in tasks if kind in i}
    first = runs["import_set.succeeded" if second == "error_report" else "error_report"]
    assert sorted(runs) == ["error_report", "import_set.succeeded"]
    assert held == [("bad", first.id)]
    assert {identifier for identifier, run_id in audit if run_id == runs[second].id} == (
        set(ARCHIVED) if second == "error_report" else set()
    )
    assert reports == ["remediated"]  # the rows the first run took count as found
    if second == "error_report":  # the report's 5 rows, and the 2 the file's run took
        assert (runs[second].input_rows, runs[second].quarantined) == (len(ARCHIVED), 0)
        assert (
            outcome["error_report"]
            == f"remediated {len(ARCHIVED) + 2} row(s) for 5 reported error(s)"
        )
    else:  # every row of the failed-records file was taken by the report's run
        assert (runs[second].input_rows, runs[second].corrected) == (0, 0)
        assert "2 left out: another run over both.csv corrected or quarantined them" in str(
            outcome["import_set"]
        )
    loop.sandbox.connector_poll()  # Stripe imports the corrected files
    assert sorted(loop.accepted()) == sorted(derived)


def test_a_row_an_import_set_quarantined_fixed_by_hand_and_refused_again_is_remediated(
    loop: Loop, deps: PollerDeps
) -> None:
    """The import set's run quarantined `x` (its value is no number). The customer fixes
    the value by hand, names the customer by an external id, and uploads the file again:
    meterfix indexes the new version, which holds `x` again (marked taken again, an info
    alert), Stripe's connector takes it and refuses `x` again for its customer, and the
    report's run corrects it through the customer map. Unmarked, the quarantined row of the
    import set's run counted as handled: the report's run left `x` out, billed never."""
    now = int(time.time()) - 60
    base = {"timestamp": now, "event_name": "api_requests", "customer": "cus_alice"}
    rows: list[dict[str, Any]] = [{**base, "identifier": "ok1", "value": "3"}]
    rows.append({**base, "identifier": "x", "value": "abc"})
    loop.s3.put_object(Bucket=BUCKET, Key=KEY, Body=render(rows, "csv"))
    assert run_poll_pass(deps).indexed == 1
    loop.sandbox.connector_poll()  # `x` in the failed-records file
    loop.drain()
    with loop.session() as session:
        [held] = session.exec(select(QuarantinedRow)).all()
    assert (held.identifier, held.taken_again) == ("x", None)
    time.sleep(1.1)  # S3 stamps whole seconds: uploaded after the row was quarantined
    rows[1] = {**base, "identifier": "x", "value": "5", "customer": "acme-42"}
    loop.s3.put_object(Bucket=BUCKET, Key=KEY, Body=render(rows, "csv"))
    assert run_poll_pass(deps).indexed == 1
    with loop.session() as session:
        [held] = session.exec(select(QuarantinedRow)).all()
        alerts = session.exec(select(Alert).where(Alert.kind == "poller.taken_again")).all()
    assert held.taken_again is not None and held.taken_again.startswith(f"{KEY} (ETag ")
    assert [a.detail["quarantined_taken_again"] for a in alerts] == [1]
    loop.sandbox.connector_poll()  # ok1 deduped; `x` refused: no customer `acme-42`
    assert loop.sandbox_app.extensions["sandbox"].flush_reports()
    loop.drain()
    assert _corrected_identifiers(loop) == Counter(["x-mfx1"])
    loop.sandbox.connector_poll()  # the corrected file
    assert sorted(loop.accepted()) == ["ok1", "x-mfx1"]
