"""`meterfix poll --retry KEY [--yes]` at its edges: another poller running, a version gone
from the bucket, unacknowledged batches of different ages. The sandbox over HTTP through the
real SDK, a file:// bucket, SQLite and PostgreSQL. Each test failed on the code before its fix
(the docstrings say what went wrong)."""

# ruff: noqa: F811  (fixtures imported from the module that defines them)
from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import create_engine
from sqlmodel import Session, select

from service.adapters.meter_events import StripeMeterEventSink
from service.adapters.stripe_client import build_stripe_client
from service.config import Settings
from service.errors import MeterEventSendError
from service.models import AdminAction, Alert, PollerBatch
from service.poller.lock import poller_lock
from service.poller.passes import PollerDeps, run_poll_pass
from service.poller.retry import find_retry, reopen
from tests.conftest import SandboxServer
from tests.integration.test_poller_resume import (  # noqa: F401
    STREAM,
    Killed,
    _dying,
    _object,
    _put,
    _rows,
    poller,
    settings,
)


def _given_up_past_the_horizon(settings: Settings, poller: Any, tmp_path: Path) -> None:
    """late.csv: first sent a day ago, the poller killed part-way, then given up ("horizon")."""
    _put(settings, "late.csv", _rows(1500), tmp_path)
    day_ago = datetime.now(UTC) - timedelta(hours=24)
    with pytest.raises(Killed):
        run_poll_pass(poller(_dying(settings, die_at=14), at=day_ago))
    assert run_poll_pass(poller()).gave_up == 1
    assert _object(poller(), "late.csv").status == "failed"


def _batches(deps: PollerDeps) -> list[tuple[int, datetime, datetime | None]]:
    with Session(deps.engine) as session:
        found = session.exec(select(PollerBatch).order_by(PollerBatch.batch_number)).all()
    return [(b.batch_number, b.first_sent_at, b.acked_at) for b in found]


def _admin_actions(deps: PollerDeps) -> list[AdminAction]:
    with Session(deps.engine) as session:
        return list(session.exec(select(AdminAction)).all())


def test_a_retry_while_another_poller_runs_a_pass_changes_nothing(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path, make_app: Any
) -> None:
    """README: one pass at a time per database, whatever runs it.

    Instead: `poll --retry KEY --yes` reopened the object and dropped its unacknowledged send
    records before its pass asked for the poller lock; another poller's pass held it (it may
    be importing that very object, its batches in flight), so the retry's pass was skipped,
    yet the records of batches Stripe may hold were gone and an admin action said the
    operator's re-send was done."""
    _given_up_past_the_horizon(settings, poller, tmp_path)
    before = _batches(poller())
    other = create_engine(settings.database_url)
    cli = make_app(settings).test_cli_runner()
    with poller_lock(other) as held:
        assert held
        result = cli.invoke(args=["poll", "--retry", "late.csv", "--yes"])
    other.dispose()
    assert result.exit_code != 0 and "another poller" in result.output, result.output
    assert _batches(poller()) == before, result.output
    assert _object(poller(), "late.csv").status == "failed"
    assert _admin_actions(poller()) == []


def test_a_retry_of_a_version_gone_from_the_bucket_changes_nothing(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path, make_app: Any
) -> None:
    """`poll --retry KEY --yes` of a version the bucket no longer holds cannot send anything.

    Instead: it dropped the version's unacknowledged send records and recorded the
    operator's confirmed re-send, then found the version gone ("no longer in the bucket").
    Without those records its rows recorded as sent count as never sent: a later version
    holding them sends them again, a day after they may have been billed."""
    _given_up_past_the_horizon(settings, poller, tmp_path)
    before = _batches(poller())
    (tmp_path / "bucket" / "late.csv").unlink()
    cli = make_app(settings).test_cli_runner()
    result = cli.invoke(args=["poll", "--retry", "late.csv", "--yes"])
    assert _batches(poller()) == before, result.output
    assert result.exit_code != 0 and "no longer in the bucket" in result.output, result.output
    assert "nothing sent" in result.output
    assert _admin_actions(poller()) == []


class _Failing(StripeMeterEventSink):
    """The real sink, but the batches holding one of `rows` fail as a 5xx that outlasted the
    retries (the batches beside go on); with `reached`, Stripe took the request and only its
    answer was lost, and the other failing batches fail only once it was taken (a fixed wait
    left which batches the pass took before its first failure to the machine's load)."""

    def __init__(
        self, settings: Settings, rows: set[str], reached: frozenset[str] = frozenset()
    ) -> None:
        super().__init__(build_stripe_client(settings), settings, workers=2, base_delay=0.01)
        self.rows, self.reached = rows, reached
        self.taken = threading.Event()

    def send_batch(self, batch: Any) -> int:
        named = {event["identifier"] for event in batch}
        if not named & self.rows:
            return super().send_batch(batch)
        if named & self.reached:
            super().send_batch(batch)
            self.taken.set()
        elif self.reached:
            assert self.taken.wait(timeout=60)
        raise MeterEventSendError("failed after 8 attempts: HTTP 500", status=500)


def _two_ages(settings: Settings, poller: Any, tmp_path: Path, now: datetime) -> None:
    """mixed.csv (2000 rows, 20 batches): batch 5 (rows 501-600) first sent 30 h ago and
    never acknowledged; batch 15 (rows 1501-1600) first sent 10 h ago, taken by Stripe, its
    answer lost. Given up."""
    stamp = int((now - timedelta(hours=30)).timestamp()) - 60
    _put(
        settings,
        "mixed.csv",
        [f"r-{i},{stamp},api_requests,cus_A,1\n" for i in range(2000)],
        tmp_path,
    )
    first = _Failing(settings, {"r-500"})
    assert run_poll_pass(poller(first, at=now - timedelta(hours=30))).retry_files == 1
    assert _object(poller(), "mixed.csv").acked_batches == 5
    # 20 h later (within the horizon): batch 5 fails again, batch 15 reaches Stripe unanswered
    second = _Failing(settings, {"r-500", "r-1500"}, reached=frozenset({"r-1500"}))
    assert run_poll_pass(poller(second, at=now - timedelta(hours=10))).gave_up == 1
    unacked = {n: sent for n, sent, acked in _batches(poller()) if acked is None}
    assert set(unacked) == {5, 15}, unacked


def test_retry_yes_keeps_the_first_send_time_of_batches_within_the_horizon(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """DESIGN: "no identifier is ever sent again more than 23 hours after its first send
    without an operator's explicit decision".

    Instead: `--yes` (the operator's decision about the batches first sent more than 23 h
    ago) dropped the records of every unacknowledged batch, a batch first sent 10 h before
    too: the retry recorded it as first sent now. Its send failing again, a pass 14 h later
    (24 h after Stripe took it) re-sent it without asking: billed twice."""
    now = datetime.now(UTC)
    _two_ages(settings, poller, tmp_path, now)
    plan = find_retry(poller().engine, "mixed.csv", "", now)
    assert plan is not None and [b.number for b in plan.stale] == [5]
    reopen(poller().engine, plan, confirmed=True)  # what `poll --retry mixed.csv --yes` does
    failing = _Failing(settings, {"r-1500"})  # batch 15 fails again; batch 5 goes through
    assert run_poll_pass(poller(failing, at=now)).retry_files == 1
    later = run_poll_pass(poller(at=now + timedelta(hours=14)))
    resent = sorted({d["identifier"] for d in sandbox_server.admin.duplicates()})
    assert resent == [], f"{len(resent)} rows sent again 24 h after Stripe took them: {resent[:3]}"
    assert later.gave_up == 1 and "more than 23 h ago" in later.errors[0]


def test_retry_names_the_rows_it_re_sends_not_the_span_between_them(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path, make_app: Any
) -> None:
    """README: `poll --retry KEY` "first prints what it will re-send (batches, rows,
    first-send times)".

    Instead: it printed the span from the first unacknowledged row to the last ("2 batches
    (rows 501 to 1600 ...)"): 1,100 rows, 900 of them acknowledged and never sent again."""
    now = datetime.now(UTC)
    _two_ages(settings, poller, tmp_path, now)
    cli = make_app(settings).test_cli_runner()
    result = cli.invoke(args=["poll", "--retry", "mixed.csv"])
    assert result.exit_code != 0 and "pass --yes" in result.output
    first, second = now - timedelta(hours=30), now - timedelta(hours=10)
    resends = (
        "It re-sends 2 batches (rows 501 to 600 and 1501 to 1600: 200 rows, first sent "
        f"{first:%Y-%m-%d %H:%M:%S} to {second:%Y-%m-%d %H:%M:%S} UTC)"
    )
    stale = f"1 batch (rows 501 to 600: 100 rows, first sent {first:%Y-%m-%d %H:%M:%S} UTC)"
    assert resends in result.output and stale in result.output, result.output


def test_times_are_printed_in_utc_whatever_the_database_session_time_zone(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path, make_app: Any
) -> None:
    """`poll --retry` and the given-up alert print times "UTC".

    Instead: PostgreSQL gives timestamps back in the session's time zone (a server whose
    default is local time, or `options=-c timezone=...` in DATABASE_URL), and they were
    printed as they came, labelled UTC: five hours off in New York, so an operator read the
    first send as 5 h younger than it was, and the alert's deadline as 5 h later."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite keeps no time zone")
    zoned = settings.model_copy(
        update={"database_url": settings.database_url + "%20-ctimezone%3DAmerica/New_York"}
    )
    engine = create_engine(zoned.database_url)
    start = datetime.now(UTC) - timedelta(hours=30)
    stamp = int(start.timestamp()) - 60
    _put(
        settings,
        "zoned.csv",
        [f"z-{i},{stamp},api_requests,cus_A,1\n" for i in range(150)],
        tmp_path,
    )
    for hours in (0, 7):  # batch 0 fails: given up after 6 h of failures
        deps = poller(_Failing(settings, {"z-0"}), at=start + timedelta(hours=hours))
        deps.engine = engine
        run_poll_pass(deps)
    engine.dispose()
    with Session(poller().engine) as session:
        alert = session.exec(select(Alert)).one()
    deadline = start + timedelta(hours=23)
    assert f"Failing since {start:%Y-%m-%d %H:%M} UTC" in alert.message, alert.message
    assert f"before {deadline:%Y-%m-%d %H:%M} UTC" in alert.message, alert.message
    result = make_app(zoned).test_cli_runner().invoke(args=["poll", "--retry", "zoned.csv"])
    assert f"first sent {start:%Y-%m-%d %H:%M:%S} UTC" in result.output, result.output


def test_a_key_given_whole_is_retried_not_the_same_name_under_the_prefix(
    settings: Settings,
    sandbox_server: SandboxServer,
    s3_endpoint: str,
    tmp_path: Path,
    make_app: Any,
) -> None:
    """`--retry KEY` takes the key as stored, or under the bucket prefix.

    Instead: it took whichever of the two the poller recorded last. With BUCKET_URL
    `s3://usage/in`, `--retry in/a.csv` (the key the alert names) found the newer
    `in/in/a.csv`, imported, and answered "nothing to retry" with exit 0: `in/a.csv` stayed
    given up, its usage unbilled."""
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="usage")
    s3 = settings.model_copy(update={"bucket_url": "s3://usage/in", "s3_endpoint_url": s3_endpoint})
    _put(s3, "in/a.csv", _rows(3, "a"), tmp_path)
    _put(s3, "in/in/a.csv", _rows(3, "n"), tmp_path)
    sandbox_server.admin.inject_fault(
        "POST", STREAM, 400, count=1
    )  # in/a.csv: its request goes first
    cli = make_app(s3).test_cli_runner()
    first = cli.invoke(args=["poll", "--once"], catch_exceptions=False)
    assert "1 files" in first.output and "1 given up" in first.output, first.output
    result = cli.invoke(args=["poll", "--retry", "in/a.csv"], catch_exceptions=False)
    assert result.exit_code == 0 and "import: 1 files, 3 rows, 3 sent" in result.output, (
        result.output
    )
    accepted = sorted(e["identifier"] for e in sandbox_server.admin.meter_events())
    assert accepted == ["a-0", "a-1", "a-2", "n-0", "n-1", "n-2"]


def test_retry_counts_every_batch_acknowledged_not_only_the_first_run_of_them(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path, make_app: Any
) -> None:
    """`poll --retry KEY` says how many batches Stripe acknowledged before it asks to re-send.

    Instead: it counted only the unbroken run from the first batch ("5 batches
    acknowledged"): mixed.csv's batches 0-4, but 6-14 and any after batch 15 taken beside it
    were acknowledged too (14 to 16 in all, batches 5 and 15 not), and an operator deciding
    on `--yes` read 1,100 acknowledged rows as at risk of being sent again."""
    now = datetime.now(UTC)
    _two_ages(settings, poller, tmp_path, now)
    acknowledged = [n for n, _, acked in _batches(poller()) if acked is not None]
    # 0-4, 6-14 and those of 16-17 the pass took beside 15 (the machine's timing decides)
    assert set(range(5)) | set(range(6, 15)) <= set(acknowledged) <= set(range(18)) - {5, 15}
    cli = make_app(settings).test_cli_runner()
    result = cli.invoke(args=["poll", "--retry", "mixed.csv"])
    said = f"{len(acknowledged)} batches acknowledged; a retry resumes at row 501"
    assert said in result.output, result.output
