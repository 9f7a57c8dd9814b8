"""Index mode (Stripe's S3 connector imports, the poller only indexes): a quarantined row the
operator fixed by hand and uploaded under another file name is billed by the connector from
that file. Its quarantine entry stayed waiting (the poller marked only the entries of runs
over the object it indexed, and a re-run's pick looked at the poller's sends and at later
versions of the row's own object), so a quarantine re-run sent it again as `g1-mfx1`: billed
twice. The same usage only (1b66619): the same identifier at the same second, or by the
identifier alone when it was quarantined for its timestamp; an identifier used again days
later for other usage leaves the entry waiting, from another file or a later version of the
same one. Real parts: moto S3, the sandbox and its connector, the worker; SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlmodel import col, select, update

from service.config import Settings
from service.models import Alert, InboxEvent, QuarantinedRow, RemediationRun
from service.poller.passes import PollerDeps, build_poller_deps, run_poll_pass
from service.runtime import Runtime
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


def _refused(loop: Loop, deps: PollerDeps, g1: list[object]) -> list[list[object]]:
    """usage/day.csv: `ok1`, and `g1` (`g1`'s row); the poller indexes it, Stripe's connector
    bills ok1 and refuses g1, and meterfix quarantines g1 (no rule fixes it yet)."""
    rows: list[list[object]] = [["ok1", int(time.time()) - 60, "api_requests", "cus_alice", "3"]]
    rows.append(g1)
    _put(loop, "day.csv", usage_csv(rows))
    run_poll_pass(deps)
    loop.sandbox.connector_poll()
    loop.drain()
    [entry] = _held(loop)
    assert (entry.identifier, entry.taken_again, entry.rerun_id) == ("g1", None, None)
    time.sleep(1)  # S3 stamps whole seconds: what comes next is uploaded after
    return rows


def _run_alert(loop: Loop, entry: QuarantinedRow) -> Alert:
    with loop.session() as session:
        run = session.get(RemediationRun, entry.run_id)
        assert run is not None
        return session.exec(select(Alert).where(Alert.alert_key == f"run:{run.run_key}")).one()


def _last_rerun_outcome(loop: Loop) -> str:
    with loop.session() as session:
        task = session.exec(
            select(InboxEvent)
            .where(InboxEvent.event_type == "meterfix.remediate.quarantine_rerun")
            .order_by(col(InboxEvent.id).desc())
        ).first()
    assert task is not None
    return str(task.outcome)


def _corrected_rows(loop: Loop) -> list[str]:
    """The identifiers of the corrected objects (a re-run's are JSON Lines)."""
    return [
        str(json.loads(line)["identifier"])
        for key, body in loop.objects().items()
        if "/corrected/" in key and key.endswith(".jsonl")
        for line in body.decode().splitlines()
    ]


@pytest.mark.parametrize("cause", ["customer", "timestamp"])
def test_a_row_fixed_by_hand_in_a_file_of_another_name_is_marked_when_indexed_not_re_run(
    loop: Loop, deps: PollerDeps, cause: str
) -> None:
    """g1 refused (a customer Stripe does not know, or a timestamp 40 days old) and
    quarantined from usage/day.csv; the operator fixes it and uploads usage/fix.csv, which
    the poller indexes and the connector bills. The entry is marked taken again from
    fix.csv when the poller indexes it (by the identifier alone when quarantined for its
    timestamp: fixed, it goes out at another second), and a re-run after the customer is
    mapped sends nothing (before: unmarked, and the re-run billed g1-mfx1)."""
    now = int(time.time()) - 60
    stamp = now - 40 * DAY if cause == "timestamp" else now
    customer = "ghost-1" if cause == "customer" else "cus_alice"
    _refused(loop, deps, ["g1", stamp, "api_requests", customer, "5"])
    _put(loop, "fix.csv", usage_csv([["g1", now, "api_requests", "cus_alice", "5"]]))
    run_poll_pass(deps)  # indexes fix.csv
    [entry] = _held(loop)
    assert entry.taken_again is not None, "fix.csv's g1 did not mark the entry"
    assert entry.taken_again.startswith("usage/fix.csv (ETag "), entry.taken_again
    assert _run_alert(loop, entry).status == "resolved"
    loop.sandbox.connector_poll()  # Stripe bills fix.csv's g1
    assert sorted(loop.accepted()) == ["g1", "ok1"]
    add_rules(loop, '"ghost-1" = "cus_alice"\n')
    assert rerun(loop)["rows"] == 0  # nothing waits
    loop.sandbox.connector_poll()
    assert sorted(loop.accepted()) == ["g1", "ok1"]
    assert "g1-mfx1" not in _corrected_rows(loop)


def test_a_rerun_leaves_a_row_the_poller_indexed_from_another_file_unmarked(
    loop: Loop, deps: PollerDeps
) -> None:
    """The entry of a row fixed in usage/fix.csv, indexed but not marked (indexed before the
    poller marked such rows): the re-run's pick finds it in the poller's index, leaves it and
    marks it (before: it re-sent it as g1-mfx1, billed twice)."""
    now = int(time.time()) - 60
    _refused(loop, deps, ["g1", now, "api_requests", "ghost-1", "5"])
    _put(loop, "fix.csv", usage_csv([["g1", now, "api_requests", "cus_alice", "5"]]))
    run_poll_pass(deps)
    loop.sandbox.connector_poll()
    with loop.session() as session:  # as the poller left it before
        session.exec(update(QuarantinedRow).values(taken_again=None))  # type: ignore[call-overload]
        session.commit()
    add_rules(loop, '"ghost-1" = "cus_alice"\n')
    rerun(loop)
    loop.sandbox.connector_poll()
    assert sorted(loop.accepted()) == ["g1", "ok1"]
    assert "; 1 left quarantined: billed as they are since" in _last_rerun_outcome(loop)
    [entry] = _held(loop)
    assert entry.rerun_id is None and entry.taken_again is not None
    assert "usage/fix.csv" in entry.taken_again, entry.taken_again


@pytest.mark.parametrize("name", ["fix.csv", "day.csv"])
def test_an_identifier_used_again_for_other_usage_leaves_the_row_waiting(
    loop: Loop, deps: PollerDeps, name: str
) -> None:
    """g1 of three days ago quarantined from usage/day.csv; g1 used again now for other usage
    (another second), in another file or a later version of day.csv, indexed and billed. The
    day-3 entry still waits (before: marked taken again from the version of day.csv, and a
    re-run's pick left it: never billed); once the customer is mapped a re-run bills it once,
    as g1-mfx1."""
    now = int(time.time()) - 60
    rows = _refused(loop, deps, ["g1", now - 3 * DAY, "api_requests", "ghost-1", "5"])
    again = ["g1", now, "api_requests", "cus_alice", "7"]
    _put(loop, name, usage_csv([rows[0], again] if name == "day.csv" else [again]))
    run_poll_pass(deps)
    loop.sandbox.connector_poll()  # the other usage: billed
    [entry] = _held(loop)
    assert entry.taken_again is None, entry.taken_again
    add_rules(loop, '"ghost-1" = "cus_alice"\n')
    assert rerun(loop)["rows"] == 1
    loop.sandbox.connector_poll()  # the re-run's corrected object
    events = sorted(
        (str(e["identifier"]), str(e["payload"].get("value"))) for e in loop.sandbox.meter_events()
    )
    assert events == [("g1", "7"), ("g1-mfx1", "5"), ("ok1", "3")], events
    assert _corrected_rows(loop) == ["g1-mfx1"]
