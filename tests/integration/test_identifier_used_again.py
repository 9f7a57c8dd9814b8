"""An identifier used again for other usage (Stripe dedupes one for about 24 hours only): a
quarantined row of it is taken again only by a row of the same usage (the same timestamp,
read as the rules read it; without a timestamp, the same event name and payload). The poller
marking the entries any run holds when Stripe acknowledges a batch (e22d9ae) and a run's end
superseding older entries matched by the identifier (or an empty timestamp) alone: the older
row's usage was never billed, and no longer shown as waiting."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select, update

from service.config import Settings
from service.db import make_engine
from service.jobs.store.taken_again import mark_taken_again
from service.jobs.store.usage_stamps import stamp_of
from service.models import QuarantinedRow
from service.models._types import utcnow
from service.poller.passes import run_poll_pass
from tests.conftest import SandboxServer
from tests.integration.test_billing_safety import (  # noqa: F401 (`loop`: a fixture)
    bundled_poller,
    loop,
    rerun,
    usage_csv,
)
from tests.integration.test_e2e import Loop, _put
from tests.integration.test_web_rerun import HEADER, _remediate, _settings


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _rows(engine: object) -> list[QuarantinedRow]:
    with Session(engine) as session:  # type: ignore[call-overload]
        return list(session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).all())


def test_an_identifier_used_again_days_later_leaves_the_quarantined_row_waiting(
    loop: Loop,  # noqa: F811
) -> None:
    """Day 1: `x` names no meter (legacy_calls, 5): refused, quarantined. Day 4: the customer
    uses `x` again for other usage (api_requests, 7, another timestamp), billed. The day-1
    row still waits; once the meter exists, a re-run bills it once, under x-mfx1."""
    now = int(time.time())
    day1 = now - 3 * 86400
    with bundled_poller(loop) as deps:
        old = ["x", day1, "legacy_calls", "cus_alice", "5"]
        _put(loop, "day1.csv", usage_csv([["a", day1, "api_requests", "cus_alice", "3"], old]))
        run_poll_pass(deps)
        loop.drain()
        [entry] = _rows(loop.engine)
        assert (entry.identifier, entry.taken_again) == ("x", None)
        with Session(loop.engine) as session:  # quarantined three days ago
            moved = entry.created_at - timedelta(days=3)
            session.exec(update(QuarantinedRow).values(created_at=moved))  # type: ignore[call-overload]
            session.commit()
        time.sleep(1)
        _put(loop, "day4.csv", usage_csv([["x", now - 30, "api_requests", "cus_alice", "7"]]))
        run_poll_pass(deps)
        loop.drain()
        [entry] = _rows(loop.engine)
        assert entry.taken_again is None, entry.taken_again  # before: marked sent from day4.csv
        loop.sandbox.create_meter("legacy_calls")
        assert rerun(loop)["rows"] == 1
        assert deps.meters is not None
        deps.meters.refresh()  # the poller's meters are cached for a while
        run_poll_pass(deps)  # the re-run's corrected file: x-mfx1
    events = [
        (e["identifier"], e["event_name"], e["payload"].get("value"))
        for e in loop.sandbox.meter_events()
    ]
    assert sorted(e for e in events if e[0].startswith("x")) == [
        ("x", "api_requests", "7"),
        ("x-mfx1", "legacy_calls", "5"),
    ], events
    [entry] = _rows(loop.engine)
    assert entry.rerun_id is not None and entry.taken_again is None


def test_a_row_sent_is_the_quarantined_row_by_its_timestamp_read_as_the_rules_read_it(
    sandbox_server: SandboxServer,
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
) -> None:
    """The poller's marking (mark_taken_again with the seconds each row was sent at): a row
    quarantined for its timestamp (in milliseconds, ahead: `timestamp_in_future`) is marked by
    its send fixed by hand at another second; one quarantined for another cause at the same
    second in milliseconds is marked too, at another second it is not."""
    sandbox_server.admin.create_meter("api_requests")
    settings = _settings(make_settings, sandbox_server, db_url)
    now = int(time.time())
    far = (now + 30 * 86400) * 1000
    body = (
        f"{HEADER}f1,{far},api_requests,cus_1,3,timestamp_in_future\n"
        f"m1,{(now - 60) * 1000},tokens,cus_1,4,no_meter\n"
        f"m2,{now - 60},tokens,cus_1,5,no_meter\n"
    )
    run = _remediate(settings, engine, tmp_path, body)
    assert run.quarantined == 3
    time.sleep(1.1)
    seconds: dict[str, set[int | None]] = {"f1": {now}, "m1": {now - 60}, "m2": {now - 3600}}
    assert mark_taken_again(engine, None, sorted(seconds), "v", utcnow(), seconds=seconds) == 2
    marked = {row.identifier: row.taken_again for row in _rows(engine)}
    assert marked == {"f1": "v", "m1": "v", "m2": None}, marked
    assert stamp_of("2025-11-24T16:00:00Z") == stamp_of(" 1764000000000 ") == "1764000000"


def test_rows_without_a_timestamp_supersede_only_the_same_usage(
    sandbox_server: SandboxServer,
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
) -> None:
    """Stripe takes a row without a timestamp at the moment it receives it. Day 1: k1
    (tokens, cus_1, 3) quarantined; day 5: k1 used again (tokens, cus_2, 9), quarantined too:
    two usages, both waiting (before: the day-1 entry was superseded, `stamp_of` "" matching
    ""). A copy of the day-5 file (the same row) supersedes day 5's entry."""
    sandbox_server.admin.create_meter("api_requests")
    settings = _settings(make_settings, sandbox_server, db_url)
    first = _remediate(settings, engine, tmp_path, f"{HEADER}k1,,tokens,cus_1,3,no_meter\n")
    time.sleep(0.01)
    day5 = f"{HEADER}k1,,tokens,cus_2,9,no_meter\n"
    second = _remediate(settings, engine, tmp_path, day5, key="file_day5")
    assert first.quarantined == 1 and second.quarantined == 1
    rows = _rows(engine)
    assert [row.taken_again for row in rows] == [None, None], [r.taken_again for r in rows]
    time.sleep(0.01)
    third = _remediate(settings, engine, tmp_path, day5, key="file_day5_copy")
    assert third.quarantined == 1
    rows = _rows(engine)
    assert rows[0].taken_again is None
    assert rows[1].taken_again is not None and "file_day5_copy" in rows[1].taken_again
    assert rows[2].taken_again is None
