"""The 23 h re-send horizon for rows a version of an object holds that another version (here
the key before it was overwritten) sent in a batch Stripe never acknowledged, against real
local parts (the sandbox through the real stripe SDK, a file:// bucket, SQLite, and PostgreSQL
when MFX_TEST_DATABASE_URL is set). Each test failed on the code before its fix."""

# ruff: noqa: F811  (fixtures imported from the module that defines them)
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from service.adapters.meter_events import StripeMeterEventSink
from service.adapters.stripe_client import build_stripe_client
from service.config import Settings
from service.models import Alert, BucketObject, PollerBatch
from service.poller.pass_deps import PollerDeps
from service.poller.passes import PassReport, run_poll_pass
from tests.conftest import SandboxServer
from tests.integration.test_poller_billing_gaps import _accepted, _one_worker
from tests.integration.test_poller_resume import (  # noqa: F401
    STREAM,
    _put,
    poller,
    settings,
)


def test_rows_of_an_overwritten_version_backing_off_are_not_sent_past_their_horizon(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """DESIGN: "no identifier is ever sent again more than 23 hours after its first send
    without an operator's explicit decision". Rows the key's earlier version sent in a batch
    Stripe never acknowledged were judged once, as the import began (`OtherVersions.sent`),
    and went into the new version's batch with no first send time: that batch, answered 429
    (Retry-After: 60) as Stripe recovers, was sent again after its backoff 23 h 01 min after
    their first send, where Stripe no longer dedupes (billed twice, their first send had
    landed), and the object was marked imported. Now every request of the batch is held to
    their horizon: the pass gives the object up (horizon), as for the file not overwritten."""
    t0 = datetime.now(UTC) - timedelta(hours=23, minutes=5)
    rows = _lines("z", 100)  # one batch
    landed = _lost_answers(settings, sandbox_server, poller, tmp_path, t0, rows)
    _put(settings, "late.csv", [*rows, *_lines("y", 1)], tmp_path)  # overwritten: one row more
    deps, report = _backing_off(
        settings, sandbox_server, poller, t0 + timedelta(hours=22, minutes=59)
    )
    again = sorted({d["identifier"] for d in sandbox_server.admin.duplicates()[landed:]})
    assert again == [], f"{len(again)} rows sent again {deps.clock() - t0} after their first send"
    _assert_given_up(deps, report)


def test_a_later_batch_of_the_pass_is_held_to_the_horizon_of_its_rows_other_version(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """The same rows, after 100 new ones in the overwritten file: the new rows' batch backs
    off past the horizon of the earlier version's batch, and the next batch, holding its
    rows, was then sent with nothing checked (23 h 01 min after their first send: billed
    twice). Now the new rows are sent, the old ones not, and the object is given up."""
    t0 = datetime.now(UTC) - timedelta(hours=23, minutes=5)
    rows = _lines("z", 100)
    landed = _lost_answers(settings, sandbox_server, poller, tmp_path, t0, rows)
    _put(settings, "late.csv", [*_lines("y", 100), *rows], tmp_path)  # new rows first
    deps, report = _backing_off(
        settings, sandbox_server, poller, t0 + timedelta(hours=22, minutes=59)
    )
    again = sorted({d["identifier"] for d in sandbox_server.admin.duplicates()[landed:]})
    assert again == [], f"{len(again)} rows sent again {deps.clock() - t0} after their first send"
    assert [i for i in _accepted(sandbox_server) if i.startswith("y-")] == sorted(
        f"y-{i}" for i in range(100)
    )
    _assert_given_up(deps, report)


def _lines(prefix: str, count: int) -> list[str]:
    stamp = int(datetime.now(UTC).timestamp()) - 60
    return [f"{prefix}-{i},{stamp},api_requests,cus_A,1\n" for i in range(count)]


def _lost_answers(
    settings: Settings,
    sandbox_server: SandboxServer,
    poller: Any,
    tmp_path: Path,
    t0: datetime,
    rows: list[str],
) -> int:
    """`late.csv` of `rows` imported at `t0`, every try landing with its answer lost (billed
    once, the batch never acknowledged); the sends Stripe took or deduped by then."""
    _put(settings, "late.csv", rows, tmp_path)
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=-1, after=True)
    assert run_poll_pass(poller(_one_worker(settings), at=t0)).retry_files == 1
    sandbox_server.admin.clear_faults()
    assert _accepted(sandbox_server) == sorted(r.split(",")[0] for r in rows)
    return len(sandbox_server.admin.duplicates())  # the first pass's retries, deduped


def _backing_off(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, start: datetime
) -> tuple[PollerDeps, PassReport]:
    """A pass from `start` whose first two requests are answered 429 (Retry-After: 60); the
    sink's backoff moves the pass's clock (no real minutes spent)."""
    sandbox_server.admin.inject_fault("POST", STREAM, 429, count=2, retry_after=60)
    slept = [0.0]  # seconds (a datetime cannot move by the last sub-microsecond of a backoff)

    def sleep(seconds: float) -> None:
        slept[0] += seconds

    sink = StripeMeterEventSink(
        build_stripe_client(settings), settings, workers=1, clock=lambda: slept[0], sleep=sleep
    )
    deps = poller(sink)
    deps.clock = lambda: start + timedelta(seconds=slept[0])
    return deps, run_poll_pass(deps)


def _assert_given_up(deps: PollerDeps, report: PassReport) -> None:
    """Given up for the horizon of the earlier version's batch (the alert's wording is
    test_poller_incidents' to check), its batches left unacknowledged for `poll --retry`."""
    assert (report.imported, report.gave_up) == (0, 1)
    [error] = report.errors
    assert error.startswith("late.csv: HorizonPassed: 1 unacknowledged batches of an earlier ")
    assert "version of it" in error and "(100 rows)" in error
    with Session(deps.engine) as session:
        alerts = session.exec(select(Alert).where(Alert.kind == "poller.gave_up")).all()
        first, last = session.exec(select(BucketObject).order_by(col(BucketObject.id))).all()
        [batch] = session.exec(select(PollerBatch).where(PollerBatch.object_id == first.id)).all()
    assert [alert.subject.split(":")[0] for alert in alerts] == ["late.csv"]
    assert batch.acked_at is None
    assert last.status == "failed"
