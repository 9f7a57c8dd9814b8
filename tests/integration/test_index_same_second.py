"""Index mode: a row Stripe's connector refused and meterfix quarantined within the second its
object was uploaded in (the sandbox's connector and the worker take well under a second; S3
keeps whole seconds). Its own object version is not a later one that took it: neither the
re-run's pick (`_indexed_since`) nor the poller indexing the version after the quarantine
marks it taken again (before: marked with its own version, ~1 run in 5 of the index-mode
tests, and the re-run left it: its usage never billed). Real parts: moto S3, the sandbox and
its connector, the worker; SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlmodel import select

from service.config import Settings
from service.models import QuarantinedRow
from service.poller.passes import PollerDeps, build_poller_deps, run_poll_pass
from service.runtime import Runtime
from tests.integration.test_billing_safety import add_rules, rerun, usage_csv
from tests.integration.test_e2e import BUCKET, Loop, _put, running_loop


@pytest.fixture
def loop(
    db_url: str, s3_endpoint: str, tmp_path: Path, make_app: Callable[[Settings], Flask]
) -> Iterator[Loop]:
    with running_loop(db_url, s3_endpoint, tmp_path, make_app, poller="index") as running:
        yield running


@pytest.fixture
def deps(loop: Loop) -> Iterator[PollerDeps]:
    runtime = Runtime(loop.settings)
    try:
        yield build_poller_deps(runtime)
    finally:
        runtime.close()


def _day_csv(loop: Loop) -> str:
    now = int(time.time()) - 60
    rows: list[list[object]] = [
        ["ok1", now, "api_requests", "cus_alice", "3"],
        ["g1", now, "api_requests", "ghost-1", "5"],
    ]
    return _put(loop, "day.csv", usage_csv(rows))


def _quarantined_within_the_upload_second(loop: Loop, key: str, milliseconds: int = 500) -> int:
    """g1's one entry, its quarantine moved to half a second into the second S3 stamped the
    object with (what a quick connector and worker give in about 1 run in 5)."""
    uploaded = loop.s3.head_object(Bucket=BUCKET, Key=key)["LastModified"]
    with loop.session() as session:
        [entry] = session.exec(select(QuarantinedRow)).all()
        assert (entry.identifier, entry.taken_again) == ("g1", None)
        entry.created_at = uploaded + timedelta(milliseconds=milliseconds)
        session.add(entry)
        session.commit()
        assert entry.id is not None
        return entry.id


def _events(loop: Loop) -> list[tuple[str, str]]:
    return sorted(
        (str(e["identifier"]), str(e["payload"].get("value"))) for e in loop.sandbox.meter_events()
    )


def _entry(loop: Loop, entry_id: int) -> QuarantinedRow:
    with loop.session() as session:
        entry = session.get(QuarantinedRow, entry_id)
        assert entry is not None
        return entry


def test_a_rerun_takes_a_row_quarantined_within_its_objects_upload_second(
    loop: Loop, deps: PollerDeps
) -> None:
    """The poller indexes day.csv, the connector bills ok1 and refuses g1 (unknown customer),
    meterfix quarantines g1 within the second; the customer is mapped and a re-run bills g1
    once as g1-mfx1 (before: the pick read day.csv's indexed g1 as uploaded after the entry,
    marked it taken from day.csv and sent nothing)."""
    key = _day_csv(loop)
    run_poll_pass(deps)
    loop.sandbox.connector_poll()
    loop.drain()
    entry_id = _quarantined_within_the_upload_second(loop, key)
    add_rules(loop, '"ghost-1" = "cus_alice"\n')
    assert rerun(loop)["rows"] == 1
    loop.sandbox.connector_poll()
    loop.drain()
    entry = _entry(loop, entry_id)
    assert entry.taken_again is None and entry.rerun_id is not None, entry.taken_again
    assert _events(loop) == [("g1-mfx1", "5"), ("ok1", "3")]


def test_the_poller_indexing_the_refused_version_afterwards_marks_nothing(
    loop: Loop, deps: PollerDeps
) -> None:
    """The connector imports day.csv and meterfix quarantines g1 within the second before the
    poller's pass indexes it (the poller's pass comes later): that version is the row's own,
    not one that took it again. The entry waits, and a re-run bills it (before: marked taken
    again from its own version at indexing: never billed)."""
    key = _day_csv(loop)
    loop.sandbox.connector_poll()
    loop.drain()
    entry_id = _quarantined_within_the_upload_second(loop, key)
    run_poll_pass(deps)  # indexes day.csv
    assert _entry(loop, entry_id).taken_again is None
    add_rules(loop, '"ghost-1" = "cus_alice"\n')
    assert rerun(loop)["rows"] == 1
    loop.sandbox.connector_poll()
    loop.drain()
    assert _events(loop) == [("g1-mfx1", "5"), ("ok1", "3")]


def test_a_later_version_of_its_own_object_within_the_quarantine_second_takes_it(
    loop: Loop, deps: PollerDeps
) -> None:
    """day.csv refused for g1 and quarantined; the customer fixes g1 in place (v2, another
    ETag) within the second after the quarantine. The connector bills v2's g1, the poller
    indexing v2 marks the entry taken again, and a re-run leaves it: g1 billed once (a
    review of 832ff49: the rows of the object's own runs kept no grace for any version of it,
    and the re-run billed g1-mfx1 too)."""
    now = int(time.time()) - 60
    rows: list[list[object]] = [
        ["ok1", now, "api_requests", "cus_alice", "3"],
        ["g1", now, "api_requests", "ghost-1", "5"],
    ]
    key = _put(loop, "day.csv", usage_csv(rows))
    run_poll_pass(deps)  # indexes v1
    loop.sandbox.connector_poll()
    loop.drain()
    time.sleep(1.1)  # S3 stamps whole seconds: v2 is uploaded in a later one
    rows[1][3] = "cus_alice"
    _put(loop, "day.csv", usage_csv(rows))
    entry_id = _quarantined_within_the_upload_second(loop, key, milliseconds=200)
    loop.sandbox.connector_poll()  # v2 taken whole: g1 billed as fixed
    run_poll_pass(deps)  # indexes v2
    taken = _entry(loop, entry_id).taken_again
    assert taken is not None and "usage/day.csv" in taken, taken
    add_rules(loop, '"ghost-1" = "cus_alice"\n')
    rerun(loop)
    loop.sandbox.connector_poll()
    loop.drain()
    assert [e for e in _events(loop) if e[0].startswith("g1")] == [("g1", "5")]
