"""A refused row whose usage the customer copied to another object, fixed by hand but still
failing our checks, refused again by Stripe's S3 connector in that object's own import set.
day.csv's k1 (a value written `1,234`) and day-fixed.csv's k1 (fixed, in milliseconds) are
the same usage under one identifier; both can be corrected. The run over day.csv's failed
records corrected k1 (k1-mfx1, billed: Stripe refused day-fixed.csv's row too), then the run
over day-fixed.csv's corrected its k1 as well, lineage raising it to k1-mfx2: billed twice.
One event an identifier: the row corrected first goes out, the other is held under
`identifier_taken`, its reason naming the first. Real sandbox (its S3 connector, failed
records holding data problems), a moto bucket, the poller indexing (MFX_POLLER=index), the
worker, both databases."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlmodel import select

from service.config import PollerMode, Settings
from service.models import CorrectionAudit, ImportSet, QuarantinedRow
from service.poller.passes import build_poller_deps, run_poll_pass
from service.runtime import Runtime
from tests.integration.test_e2e import BUCKET, Loop, render, running_loop
from tests.integration.test_report_sampled_across_objects import _after_second, _due, _row


@pytest.fixture
def loop(
    db_url: str,
    s3_endpoint: str,
    tmp_path: Path,
    make_app: Callable[[Settings], Flask],
) -> Iterator[Loop]:
    with running_loop(db_url, s3_endpoint, tmp_path, make_app, poller=PollerMode.INDEX) as running:
        yield running


def _copied_and_refused(loop: Loop, first: str) -> None:
    """day.csv and then, a second after its import set's event, day-fixed.csv, each taken
    by Stripe's connector (each import set's failed records hold k1); the run over `first`'s
    failed records is taken before the other's, the corrected file imported after each."""
    now = int(time.time()) - 60
    bad = _row("k1", now, "cus_bob", 0) | {"value": "1,234"}
    runtime = Runtime(loop.settings)
    try:
        deps = build_poller_deps(runtime)
        loop.s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=render([bad], "csv"))
        run_poll_pass(deps)
        [event] = loop.sandbox.connector_poll()
        if first == "day-fixed.csv":
            _due(loop, datetime.now(UTC) + timedelta(days=1))  # day.csv's waits in a backlog
        _after_second(int(event["created"]))
        fixed = [_row("k1", now * 1000, "cus_bob", 1234)]
        loop.s3.put_object(Bucket=BUCKET, Key="usage/day-fixed.csv", Body=render(fixed, "csv"))
        run_poll_pass(deps)
        loop.sandbox.connector_poll()
        for _ in range(2):
            loop.drain()
            run_poll_pass(deps)  # indexes the corrected file
            loop.sandbox.connector_poll()  # Stripe imports it
            _due(loop, datetime.now(UTC) - timedelta(seconds=1))
        loop.drain()
    finally:
        runtime.close()


def _objects(loop: Loop) -> dict[str, str]:
    """failed-records file -> the object its import set names (under the bucket's prefix,
    which Stripe's connector leaves out)."""
    with loop.session() as session:
        found = session.exec(select(ImportSet)).all()
    return {str(i.errors_file_id): f"usage/{i.source_object}" for i in found if i.errors_file_id}


@pytest.mark.parametrize("first", ["day.csv", "day-fixed.csv"])
def test_the_same_usage_refused_in_a_later_copy_is_billed_once(loop: Loop, first: str) -> None:
    """Whichever failed records are run first, their k1 goes out as k1-mfx1 and the other
    object's k1 is quarantined under `identifier_taken`, naming the first (before: both
    corrected, k1-mfx1 sent twice; or, day-fixed.csv's run first, day.csv's k1 left "to
    Stripe's connector", seen by nobody)."""
    _copied_and_refused(loop, first)

    assert loop.accepted() == ["k1-mfx1"]
    [event] = loop.sandbox.meter_events()
    assert event["payload"]["value"] == "1234"
    assert [e["identifier"] for e in loop.sandbox.duplicates()] == []
    objects = _objects(loop)
    with loop.session() as session:
        audit = session.exec(select(CorrectionAudit)).all()
        held = session.exec(select(QuarantinedRow)).all()
    first_key = f"usage/{first}"
    [other_key] = {"usage/day.csv", "usage/day-fixed.csv"} - {first_key}
    assert {(objects.get(a.source), a.identifier, a.new_identifier) for a in audit} == {
        (first_key, "k1", "k1-mfx1")
    }
    assert [(objects.get(r.source), r.identifier, r.code, r.reason) for r in held] == [
        (
            other_key,
            "k1",
            "identifier_taken",
            f"identifier 'k1' is also row 1's of '{first_key}', which another run corrected "
            "or quarantined (sent, or to be sent by a re-run, under a derived identifier): a "
            "second would be refused as a duplicate or billed twice; not corrected",
        )
    ]
