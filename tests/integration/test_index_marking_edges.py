"""Index mode (Stripe's S3 connector imports, the poller only indexes): which object versions
mark a quarantined row taken when the poller indexes them, and which rows a quarantine
re-run's pick leaves for them (04d8069). Another file's timestamp written other than in
digits is read in seconds as the rules read it, an unreadable one never matches by the
identifier alone; a file the connector refuses whole takes nothing. Real parts: moto S3,
the sandbox and its connector, the worker; SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask
from sqlmodel import col, select, update

from service.config import Settings
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.models import QuarantinedRow
from service.poller.passes import PollerDeps, build_poller_deps, run_poll_pass
from service.runtime import Runtime
from service.web.quarantine import csv_lines
from tests.integration.test_billing_safety import add_rules, rerun, usage_csv
from tests.integration.test_e2e import Loop, _put, running_loop

DAY = 86_400


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


def _held(loop: Loop) -> list[QuarantinedRow]:
    with loop.session() as session:
        return list(session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).all())


def _day_refused(loop: Loop, deps: PollerDeps, stamp: int) -> QuarantinedRow:
    """usage/day.csv: ok1 now, g1 at `stamp` for ghost-1 (unknown to Stripe); indexed, the
    connector bills ok1 and refuses g1, meterfix quarantines g1."""
    now = int(time.time()) - 60
    rows: list[list[object]] = [
        ["ok1", now, "api_requests", "cus_alice", "3"],
        ["g1", stamp, "api_requests", "ghost-1", "5"],
    ]
    _put(loop, "day.csv", usage_csv(rows))
    run_poll_pass(deps)
    loop.sandbox.connector_poll()
    loop.drain()
    [entry] = _held(loop)
    assert (entry.identifier, entry.taken_again, entry.rerun_id) == ("g1", None, None)
    time.sleep(1.1)  # S3 stamps whole seconds: what comes next is uploaded after
    return entry


def _spelt(spelling: str, second: int) -> str:
    if spelling == "iso":
        return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if spelling == "float":
        return f"{second}.0"
    return "yesterday" if spelling == "unreadable" else str(second)


def _events(loop: Loop) -> list[tuple[str, str]]:
    return sorted(
        (str(e["identifier"]), str(e["payload"].get("value"))) for e in loop.sandbox.meter_events()
    )


@pytest.mark.parametrize("spelling", ["iso", "float", "unreadable", "digits"])
def test_other_usage_in_another_file_spelt_otherwise_leaves_the_row_waiting(
    loop: Loop, deps: PollerDeps, spelling: str
) -> None:
    """g1 of three days ago quarantined from usage/day.csv; today usage/other.csv uses g1
    again for other usage, its timestamp written ISO-8601, as `1796656513.0`, or as no time
    at all. Indexing other.csv leaves the day-3 entry waiting, as it did for digits (before:
    the poller read such a timestamp as none, and marked the entry by the identifier alone:
    its 5 never billed)."""
    now = int(time.time()) - 60
    _day_refused(loop, deps, now - 3 * DAY)
    again = ["g1", _spelt(spelling, now), "api_requests", "cus_alice", "7"]
    _put(loop, "other.csv", usage_csv([again]))
    run_poll_pass(deps)  # indexes other.csv
    [entry, *_] = _held(loop)
    assert entry.taken_again is None, entry.taken_again


@pytest.mark.parametrize("spelling", ["iso", "float", "unreadable"])
def test_a_rerun_takes_a_row_whose_identifier_another_file_holds_for_other_usage(
    loop: Loop, deps: PollerDeps, spelling: str
) -> None:
    """As above, the entry left unmarked when other.csv was indexed (as the poller left it
    before): the re-run's pick reads the index's seconds too, so it takes the day-3 row and
    bills its 5 (before: `_indexed_since` read other.csv's g1 as without a timestamp, left
    the row and marked it: never billed)."""
    now = int(time.time()) - 60
    first = _day_refused(loop, deps, now - 3 * DAY)
    again = ["g1", _spelt(spelling, now), "api_requests", "cus_alice", "7"]
    _put(loop, "other.csv", usage_csv([again]))
    run_poll_pass(deps)
    loop.sandbox.connector_poll()
    loop.drain()
    with loop.session() as session:  # as the poller left it before
        session.exec(update(QuarantinedRow).values(taken_again=None))  # type: ignore[call-overload]
        session.commit()
    add_rules(loop, '"ghost-1" = "cus_alice"\n')
    rerun(loop)
    loop.sandbox.connector_poll()
    loop.drain()
    with loop.session() as session:
        entry = session.get(QuarantinedRow, first.id)
        assert entry is not None
        assert entry.taken_again is None and entry.rerun_id is not None
    # the day-3 usage went out (whether Stripe bills a second g1-mfx1 is the identifier
    # rule's: other.csv's g1, refused for its spelling, was corrected as g1-mfx1 too)
    assert [r for r in _corrected_rows(loop) if r[1] == "5"] == [("g1-mfx1", "5")]
    if spelling == "unreadable":  # other.csv's g1 quarantined, never billed
        assert [e for e in _events(loop) if e[0].startswith("g1")] == [("g1-mfx1", "5")]


def _corrected_rows(loop: Loop) -> list[tuple[str, str]]:
    """(identifier, value) of the corrected objects' rows (a re-run's are JSON Lines)."""
    rows = [
        json.loads(line)
        for key, body in loop.objects().items()
        if "/corrected/" in key and key.endswith(".jsonl")
        for line in body.decode().splitlines()
    ]
    return sorted((str(r["identifier"]), str(r["payload"]["value"])) for r in rows)


def test_the_quarantine_export_fixed_and_uploaded_takes_nothing(
    loop: Loop, deps: PollerDeps
) -> None:
    """The operator downloads /api/quarantine.csv, fixes g1's customer in it and uploads it as
    usage/fix.csv: Stripe's connector refuses it whole (meterfix's quarantine export is no
    usage file: no row taken). Indexing it leaves the entry waiting and its run's alert open
    (before: marked taken from fix.csv, the alert resolved, and the re-run left it: g1's 5
    never billed); a re-run after the customer is mapped bills g1-mfx1 once."""
    now = int(time.time()) - 60
    first = _day_refused(loop, deps, now)
    text = "".join(csv_lines(loop.engine, QuarantineFilter())).replace("ghost-1", "cus_alice")
    _put(loop, "fix.csv", text.encode())
    run_poll_pass(deps)  # indexes fix.csv
    loop.sandbox.connector_poll()  # refuses it whole
    loop.drain()
    with loop.session() as session:
        entry = session.get(QuarantinedRow, first.id)
        assert entry is not None and entry.taken_again is None, entry
    add_rules(loop, '"ghost-1" = "cus_alice"\n')
    assert rerun(loop)["rows"] == 1
    loop.sandbox.connector_poll()
    loop.drain()
    assert [e for e in _events(loop) if e[0].startswith("g1")] == [("g1-mfx1", "5")]


@pytest.mark.parametrize("customer", ["cus_alice", "ghost-2"])
def test_a_copy_uploaded_before_the_row_was_quarantined(
    loop: Loop, deps: PollerDeps, customer: str
) -> None:
    """usage/day.csv holds g1 for ghost-1; a second later the operator uploads usage/fix.csv
    with g1 (the same second) for `customer`, before the worker quarantined day.csv's g1 (a
    backlog, reports delayed). cus_alice: the connector bills fix.csv's g1, and a re-run
    after ghost-1 is mapped leaves day.csv's entry (before: it waited, fix.csv uploaded
    before it was quarantined, and the re-run sent g1-mfx1: billed twice). ghost-2: the
    copy is refused too and quarantined under its own entry, which the re-run takes: g1's 5
    billed once."""
    now = int(time.time()) - 60
    rows: list[list[object]] = [
        ["ok1", now, "api_requests", "cus_alice", "3"],
        ["g1", now, "api_requests", "ghost-1", "5"],
    ]
    _put(loop, "day.csv", usage_csv(rows))
    time.sleep(1.1)  # S3 stamps whole seconds: fix.csv is uploaded after
    _put(loop, "fix.csv", usage_csv([["g1", now, "api_requests", customer, "5"]]))
    run_poll_pass(deps)  # indexes both
    loop.sandbox.connector_poll()
    loop.drain()  # quarantines day.csv's g1 (and fix.csv's, refused too)
    run_poll_pass(deps)
    add_rules(loop, '"ghost-1" = "cus_alice"\n"ghost-2" = "cus_alice"\n')
    rerun(loop)
    loop.sandbox.connector_poll()
    loop.drain()
    billed = [e for e in _events(loop) if e[0].startswith("g1")]
    assert len(billed) == 1 and billed[0][1] == "5", billed
    if customer == "cus_alice":
        assert billed == [("g1", "5")]
        [entry] = _held(loop)
        assert entry.rerun_id is None and entry.taken_again is not None
        assert entry.taken_again.startswith("usage/fix.csv (ETag "), entry.taken_again
