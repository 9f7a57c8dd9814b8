"""The hourly retention purge and quarantine re-runs: a row a re-run took stays on record while
that re-run (or one after it in its chain) is kept, since it is how the re-run is found."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlmodel import col, select

from service.config import Settings
from service.models import QuarantinedRow, RemediationRun
from service.models._types import as_utc
from service.notify.retention import purge_expired
from service.poller.passes import run_poll_pass
from tests.integration.test_billing_safety import (
    a_row_the_connector_refused,
    a_row_the_poller_refused,
    add_rules,
    bundled_poller,
    fixed_by_hand_then_rerun,
    originals_billed,
    rerun,
    usage_csv,
)
from tests.integration.test_e2e import Loop, _put, running_loop


@pytest.fixture
def loop(
    db_url: str, s3_endpoint: str, tmp_path: Path, make_app: Callable[[Settings], Flask]
) -> Iterator[Loop]:
    with running_loop(db_url, s3_endpoint, tmp_path, make_app) as running:
        yield running


def _purge_between(loop: Loop, older: RemediationRun, retention_days: int = 90) -> None:
    """The hourly purge, run at the moment `older` (the first run) is just past retention
    (`retention_days` after it finished, plus half a second) while later runs are not."""
    finished = as_utc(older.finished_at)
    assert finished is not None
    purge_expired(
        loop.engine,
        retention_days,
        now=finished + timedelta(days=retention_days, milliseconds=500),
    )


def test_a_row_a_kept_rerun_corrected_is_not_sent_again_once_its_first_run_is_purged(
    loop: Loop,
) -> None:
    """The poller refused `x` (no meter by that name), run R1 quarantined it. Later the
    operator mapped the name and re-ran it: `x-mfx1` billed. The purge then removed R1's
    quarantined entries (R1 is past MFX_RETENTION_DAYS; the re-run, its audit and outputs
    are not). The customer uploads the day's file again with `x` fixed by hand: the poller
    no longer found the re-run (found only through R1's entries' `rerun_id`) and sent `x`
    too: billed twice."""
    with bundled_poller(loop) as deps:
        now, other, _row, fixed = a_row_the_poller_refused(loop, deps)
        with loop.session() as session:
            [first] = session.exec(select(RemediationRun)).all()
        time.sleep(1.5)  # the re-run comes later than the first run
        add_rules(loop, '[event_names]\n"legacy_calls" = "api_requests"\n')
        rerun(loop)
        run_poll_pass(deps)  # the re-run's corrected file: x-mfx1
        assert sorted(loop.accepted()) == ["a", "x-mfx1"]
        _purge_between(loop, first)
        with loop.session() as session:
            runs = session.exec(select(RemediationRun).order_by(col(RemediationRun.id))).all()
        assert [r.trigger for r in runs][-1] == "quarantine_rerun"  # the re-run is kept
        later = ["b", now - 30, "api_requests", "cus_alice", "1"]
        _put(loop, "day.csv", usage_csv([other, fixed, later]))
        run_poll_pass(deps)
    assert sorted(loop.accepted()) == ["a", "b", "x-mfx1"]
    assert max(originals_billed(loop).values()) == 1
    with loop.session() as session:
        assert [q.rerun_id for q in session.exec(select(QuarantinedRow)).all()] == [runs[-1].id]
    _purge_between(loop, runs[-1])  # the re-run past retention too: the row goes with it
    with loop.session() as session:
        assert session.exec(select(QuarantinedRow)).all() == []


def test_a_rerun_after_the_purge_leaves_a_row_the_connector_took_again(
    db_url: str, s3_endpoint: str, tmp_path: Path, make_app: Callable[[Settings], Flask]
) -> None:
    """Stripe's connector refused `g1` (a customer it does not know): R1 quarantined it. A
    re-run before the rules were fixed quarantined it again (entry of the re-run's run). The
    purge removed R1's entries (R1 past retention, the re-run not). The customer fixed the row
    by hand and uploaded the file again: the connector billed `g1`. The operator mapped the
    customer and re-ran: the re-run found a row's object through R1's entry (`rerun_origins`),
    gone, so it never read day.csv, and sent `g1-mfx1`: billed twice (README: "it also
    leaves a row whose object (...; for a row a re-run quarantined again, that of the row it
    took, back to the first run) the bucket now holds in a version written after the row
    was quarantined that holds its identifier")."""
    with running_loop(db_url, s3_endpoint, tmp_path, make_app, poller="off") as loop:
        rows = a_row_the_connector_refused(loop)
        with loop.session() as session:
            [first] = session.exec(select(RemediationRun)).all()
        time.sleep(1.5)
        rerun(loop)  # quarantined again: the rules are not fixed yet
        _purge_between(loop, first)
        with loop.session() as session:
            held = session.exec(select(QuarantinedRow)).all()
        # the first run's row is kept: the re-run that took it is (its row taken again)
        assert sorted((q.identifier, q.run_id != first.id) for q in held) == [
            ("g1", False),
            ("g1", True),
        ]
        fixed_by_hand_then_rerun(loop, rows)
