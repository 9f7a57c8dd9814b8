"""The bundled poller when Stripe asks it to wait longer than a pass waits (`Retry-After`
past `MAX_RETRY_AFTER`), against real local parts (the sandbox through the real stripe SDK, a
file:// bucket, SQLite, and PostgreSQL when MFX_TEST_DATABASE_URL is set). Each test failed
on the code before its fix (the docstrings say what went wrong)."""

# ruff: noqa: F811  (fixtures imported from the module that defines them)
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from service.adapters.meter_events import StripeMeterEventSink
from service.adapters.stripe_client import build_stripe_client
from service.config import Settings
from service.models import Alert
from service.poller.passes import run_poll_pass
from tests.conftest import SandboxServer
from tests.integration.test_poller_resume import (  # noqa: F401
    STREAM,
    _object,
    _put,
    _rows,
    _stream_requests,
    poller,
    settings,
)


def _utc(moment: datetime | None) -> datetime:
    assert moment is not None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite reads naive


def test_a_long_retry_after_holds_the_next_attempt_back_as_long_as_stripe_asked(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """README: a stream request that fails transiently is retried "waiting what `Retry-After`
    says"; docs/architecture.md: transient failures are retried "honouring `Retry-After`".

    Instead: a 429 asking for 600 s (more than a pass waits) fails the pass at once, and the
    object's next attempt is the poller's own backoff (30 s, jittered down to 15 s): the next
    passes send to Stripe again long before the 600 s it asked for, during its incident."""
    _put(settings, "usage.csv", _rows(5, "ra"), tmp_path)
    sandbox_server.admin.inject_fault("POST", STREAM, 429, count=-1, retry_after=600)
    start = datetime.now(UTC)
    first = run_poll_pass(poller(at=start))
    assert (first.retry_files, first.gave_up) == (1, 0)
    assert _utc(_object(poller(), "usage.csv").next_attempt_at) >= start + timedelta(seconds=600)
    asked = _stream_requests(sandbox_server)
    for minutes in (1, 3, 5, 9):  # passes inside Stripe's 600 s leave the object alone
        run_poll_pass(poller(at=start + timedelta(minutes=minutes)))
    assert _stream_requests(sandbox_server) == asked, "sent again inside Stripe's Retry-After"
    sandbox_server.admin.clear_faults()
    after = run_poll_pass(poller(at=start + timedelta(minutes=11)))
    assert (after.imported, after.sent) == (1, 5)
    assert sorted(e["identifier"] for e in sandbox_server.admin.meter_events()) == [
        f"ra-{i}" for i in range(5)
    ]


def test_a_retry_after_of_a_day_waits_at_most_an_hour_and_still_counts_toward_giving_up(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """README: `MFX_POLLER_GIVE_UP_AFTER` is "how long a usage file may keep failing ...
    before the poller gives up and raises a critical alert". A Retry-After is honoured up to
    an hour (a longer one is not trusted to hold the file back past the give-up time), and
    the waiting is part of the failing time: the poller still gives up on schedule."""
    _put(settings, "usage.csv", _rows(3, "rb"), tmp_path)
    sandbox_server.admin.inject_fault("POST", STREAM, 503, count=-1, retry_after=86400)
    start = datetime.now(UTC)
    run_poll_pass(poller(at=start))
    next_at = _utc(_object(poller(), "usage.csv").next_attempt_at)
    assert start + timedelta(minutes=59) <= next_at <= start + timedelta(hours=1, seconds=1)
    give_up = timedelta(seconds=settings.mfx_poller_give_up_after)
    late = run_poll_pass(poller(at=start + give_up + timedelta(minutes=1)))
    assert (late.retry_files, late.gave_up) == (1, 1)
    assert _object(poller(), "usage.csv").status == "failed"
    with Session(poller().engine) as session:
        alert = session.exec(select(Alert)).one()
    assert (alert.severity, alert.status) == ("critical", "open")
    assert "the poller gave up" in alert.subject
    assert sandbox_server.admin.meter_events() == []


def test_an_absurd_retry_after_backs_off_an_hour_and_the_pass_goes_on(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """A `Retry-After` of 10^15 seconds (a broken proxy's) overflowed the poller's timedelta:
    the OverflowError escaped the pass, every pass failed on the file at once (hitting Stripe
    again each time), nothing backed it off, gave up on it or alerted, and files after it in
    the pass were never reached. It is an hour, as any Retry-After past the cap is."""
    _put(settings, "a.csv", _rows(3, "oa"), tmp_path)
    _put(settings, "b.csv", _rows(3, "ob"), tmp_path)
    sandbox_server.admin.inject_fault("POST", STREAM, 429, count=-1, retry_after=10**15)
    start = datetime.now(UTC)
    first = run_poll_pass(poller(at=start))
    assert (first.retry_files, first.gave_up) == (2, 0)
    for key in ("a.csv", "b.csv"):
        next_at = _utc(_object(poller(), key).next_attempt_at)
        assert start + timedelta(minutes=59) <= next_at <= start + timedelta(hours=1, seconds=1)
    sandbox_server.admin.clear_faults()
    later = run_poll_pass(poller(at=start + timedelta(hours=1, minutes=1)))
    assert (later.imported, later.sent) == (2, 6)


class _StormFrom(StripeMeterEventSink):
    """The real sink; from the batch holding `row` on, the sandbox answers every stream
    request 429 asking for 600 s (a rate-limit storm that sets in part-way through a pass)."""

    def __init__(self, admin: Any, *args: Any, row: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.admin, self.row = admin, row

    def send_batch(self, batch: Any) -> int:
        if self.row and any(event["identifier"] == self.row for event in batch):
            self.admin.inject_fault("POST", STREAM, 429, count=-1, retry_after=600)
            self.row = ""
        return super().send_batch(batch)


def test_a_file_stripe_takes_batches_of_on_each_pass_is_never_given_up_as_failing(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """A storm of 429s that Stripe still takes some batches through: each pass moved the
    file on, yet its failing time ran from the first failure, and past
    `MFX_POLLER_GIVE_UP_AFTER` the file was given up ("import failing for 6.0 h", a
    critical alert), its last rows unbilled until an operator retried it. A pass that
    Stripe acknowledged batches in starts the failing time again."""
    _put(settings, "storm.csv", _rows(3000, "st"), tmp_path)
    give_up = timedelta(seconds=settings.mfx_poller_give_up_after)
    start = datetime.now(UTC)
    admin = sandbox_server.admin

    def storm(row: str) -> StripeMeterEventSink:
        client = build_stripe_client(settings)
        return _StormFrom(admin, client, settings, workers=1, base_delay=0.01, row=row)

    # no batch taken; then a third of the file, and another third nearly a give-up later
    for at, row in (
        (start, "st-0"),
        (start + give_up / 2, "st-1000"),
        (start + give_up, "st-2000"),
    ):
        report = run_poll_pass(poller(storm(row), at=at + timedelta(minutes=5)))
        assert (report.retry_files, report.gave_up) == (1, 0), (at - start, report)
        admin.clear_faults()
    stored = _object(poller(), "storm.csv")
    assert (stored.status, stored.acked_batches) == ("seen", 20)
    done = run_poll_pass(poller(at=start + give_up + timedelta(hours=1)))
    assert (done.imported, done.sent, done.gave_up) == (1, 3000, 0)
    billed = [e["identifier"] for e in admin.meter_events()]
    assert sorted(billed) == sorted(f"st-{i}" for i in range(3000))
    with Session(poller().engine) as session:
        assert session.exec(select(Alert)).all() == []
