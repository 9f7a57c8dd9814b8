"""The bundled poller through Stripe incidents and partial failures, against real local parts
(the sandbox through the real stripe SDK, a file:// bucket, SQLite, and PostgreSQL when
MFX_TEST_DATABASE_URL is set). Each test failed on the code before its fix (the docstrings
say what went wrong)."""

# ruff: noqa: F811  (fixtures imported from the module that defines them)
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from remediation.ports import ObjectInfo
from service.adapters.meter_events import StripeMeterEventSink
from service.adapters.stripe_client import build_stripe_client
from service.adapters.stripe_meters import StripeMeterSource
from service.config import Settings
from service.errors import MeterEventSendError
from service.models import Alert, Heartbeat, PollerBatch
from service.poller.passes import PassReport, PollerDeps, run_poll_pass
from tests.conftest import SandboxServer
from tests.integration.test_poller_billing_gaps import _accepted, _one_worker
from tests.integration.test_poller_resume import (  # noqa: F401
    STREAM,
    _object,
    _put,
    poller,
    settings,
)

# -- the bundled poller ------------------------------------------------------------------------
# (fixtures `settings` and `poller`: the sandbox over HTTP through the real SDK, a file://
# bucket, SQLite and PostgreSQL, as in test_poller_resume)


def test_the_poller_beats_while_its_batches_back_off(
    settings: Settings,
    sandbox_server: SandboxServer,
    poller: Any,
    tmp_path: Path,
    monkeypatch: Any,
) -> None:
    """Heartbeats came only as batches were taken: while they backed off through a Stripe
    incident (Retry-After up to 60 s, 8 attempts: minutes) the poller was silent, and the
    critical "no poller heartbeat" alert was raised about a poller alive and retrying. Here
    the batch backs off for about 3 s; the poller beats every 0.2 s of it."""
    from service.adapters import meter_event_batches

    monkeypatch.setattr(meter_event_batches, "WAIT_CALL_EVERY", 0.2)
    now = int(time.time()) - 60
    _put(settings, "usage.csv", [f"b-{i},{now},api_requests,cus_A,1\n" for i in range(5)], tmp_path)
    sandbox_server.admin.inject_fault("POST", STREAM, 429, count=3, retry_after=1)
    deps = poller()
    seen: set[object] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            with Session(deps.engine) as session:
                seen.update(b.last_beat_at for b in session.exec(select(Heartbeat)).all())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        started = time.monotonic()
        result = run_poll_pass(deps)
        took = time.monotonic() - started
    finally:
        done.set()
        watcher.join()
    assert result.imported == 1 and took >= 3
    assert sorted(_accepted(sandbox_server)) == [f"b-{i}" for i in range(5)]
    assert len(seen) >= 8, f"{len(seen)} beats seen in a pass of {took:.1f} s"


def test_a_batch_refused_on_a_resumed_pass_is_sent_from_the_fixed_file_a_day_later(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """README (the version listed, whole): "When a pass stops on a failure (a 400, a failure
    that outlasted the retries), the batches it recorded that never went out, and the ones
    Stripe refused, are forgotten: they were never billed, so a fixed version sends them (they
    used to count as delivered once 23 h old: 350 of 450 rows of a fixed file left out)."

    Instead: a batch is forgotten only when it was first recorded on the pass Stripe refused
    it (`_Unsent.never_billed` intersects the refused batches with `recorded`, the batches
    new on this pass). Here Stripe answers batch 0 with 500s until the first pass gives up on
    it (the pass backs off), then refuses it with a 400 on the next pass: it stays recorded as
    sent, unacknowledged; a day later the fixed file treats its 100 rows as delivered by the
    first version (`OtherVersions._delivered`) and leaves them out. Never billed, never sent."""
    day_ago = datetime.now(UTC) - timedelta(hours=24)
    stamp = int(day_ago.timestamp()) - 60
    rows = [f"u-{i},{stamp},api_requests,cus_A,{i + 1}\n" for i in range(450)]
    _put(settings, "usage.csv", rows, tmp_path)
    # batch 0's eight attempts answer 500: the pass fails on it and the object backs off
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=8)
    first = run_poll_pass(poller(_one_worker(settings), at=day_ago))
    assert (first.retry_files, first.gave_up) == (1, 0)
    # the next attempt: Stripe refuses batch 0 (HTTP 400): nothing of it was taken
    sandbox_server.admin.inject_fault("POST", STREAM, 400, count=1)
    second = run_poll_pass(poller(_one_worker(settings), at=day_ago + timedelta(minutes=5)))
    assert (second.retry_files, second.gave_up) == (1, 1)
    billed = set(_accepted(sandbox_server))
    assert not any(f"u-{i}" in billed for i in range(100))  # batch 0 never billed
    with Session(poller().engine) as session:
        recorded = session.exec(select(PollerBatch)).all()
    unacked = [(b.batch_number, b.acked_at) for b in recorded if b.acked_at is None]
    # the customer fixes the file and uploads it a day later
    _put(settings, "usage-fixed.csv", rows, tmp_path)
    third = run_poll_pass(poller(_one_worker(settings)))
    assert third.imported == 1
    missing = sorted(set(f"u-{i}" for i in range(450)) - set(_accepted(sandbox_server)))
    assert missing == [], (
        f"{len(missing)} rows never billed (first {missing[:3]}); batches still recorded "
        f"unacknowledged after the refusal: {unacked}"
    )
    assert not sandbox_server.admin.duplicates()


def test_a_stripe_outage_of_the_meters_list_is_alerted_like_a_failing_file(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """README: `MFX_POLLER_GIVE_UP_AFTER` is "how long a usage file may keep failing (its
    passes backing off from 30 s to 30 min) before the poller gives up and raises a critical
    alert"; "the poller gives up only when ... failures have lasted MFX_POLLER_GIVE_UP_AFTER
    ...: the object is marked failed and a critical alert says what to do".

    Instead: a pass reads Stripe's meters before it takes any object (`_run_pass`), so when
    `GET /v1/billing/meters` fails (a Stripe incident on that endpoint, a key that lost its
    meter read permission) every pass raises before an object is recorded: `poll_forever`
    logs `poller.pass_failed` and nothing else. Seven hours later the file has still not
    been billed, no object is failing, no alert is open, and the poller's heartbeat (beaten
    at the start of each pass) keeps /api/health green."""
    stamp = int(time.time()) - 60
    _put(
        settings, "usage.csv", [f"m-{i},{stamp},api_requests,cus_A,1\n" for i in range(5)], tmp_path
    )
    sandbox_server.admin.inject_fault("GET", "/v1/billing/meters", 500, count=-1)
    start = datetime.now(UTC)
    # the SDK's own retries (0.5 s backoff) only slow each failing pass down here
    meters = StripeMeterSource(build_stripe_client(settings, max_network_retries=0))
    for minutes in range(0, 7 * 60 + 1, 30):  # a pass every 30 minutes for seven hours
        deps = poller(at=start + timedelta(minutes=minutes))
        deps.meters = meters
        with contextlib.suppress(Exception):  # what poll_forever does: log, try again
            run_poll_pass(deps)
    assert _accepted(sandbox_server) == []
    with Session(poller().engine) as session:
        alerts = session.exec(select(Alert)).all()
    assert [a for a in alerts if a.severity == "critical" and a.status == "open"], (
        "seven hours without importing usage.csv, and no alert"
    )


class _OneBatchFails(StripeMeterEventSink):
    """The real sink, but the batch holding `row` fails as a 5xx that outlasted the retries
    (what `send_batch` raises then): the batches in flight beside it go on and are acked.

    Its eight attempts take a while: it fails once `others` other batches were acknowledged
    (all of the file's but its own: the other worker sends them one by one while it waits;
    the pass takes no batch after a failure, so a fixed wait left the count to the machine's
    load), or after a second without `others`."""

    def __init__(self, *args: Any, row: str, others: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.row, self.others, self.acked = row, others, 0
        self.settled = threading.Condition()

    def send_batch(self, batch: Any) -> int:
        if any(event["identifier"] == self.row for event in batch):
            if self.others is None:
                time.sleep(1.0)
            else:
                with self.settled:
                    others = self.others
                    assert self.settled.wait_for(lambda: self.acked >= others, timeout=60)
            raise MeterEventSendError("failed after 8 attempts: HTTP 500", status=500)
        sent = super().send_batch(batch)
        with self.settled:
            self.acked += 1
            self.settled.notify_all()
        return sent


class _SlowFirstSend(StripeMeterEventSink):
    """The real sink, each request taking two minutes on the pass's clock (`moved`)."""

    def __init__(self, *args: Any, moved: list[datetime], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.moved = moved

    def send_batch(self, batch: Any) -> int:
        sent = super().send_batch(batch)
        self.moved[0] += timedelta(minutes=2)
        return sent


def test_a_batch_is_not_sent_again_once_the_pass_reaches_its_horizon(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """DESIGN: "no identifier is ever sent again more than 23 hours after its first send
    without an operator's explicit decision". The horizon was checked once, when the pass
    took the object: a pass starting a minute before it went on re-sending the file's
    unacknowledged batches past it (each slow: backoffs, a long file). Now each batch sent
    before is checked as it goes out again: the pass stops there, gives the object up
    (horizon), and the batches left wait for `poll --retry KEY --yes`."""
    t0 = datetime.now(UTC) - timedelta(hours=23)
    stamp = int(datetime.now(UTC).timestamp()) - 60
    _put(
        settings, "day.csv", [f"h-{i},{stamp},api_requests,cus_A,1\n" for i in range(500)], tmp_path
    )
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=-1)
    assert run_poll_pass(poller(at=t0)).retry_files == 1  # five batches, none acknowledged
    sandbox_server.admin.clear_faults()
    moved = [t0 + timedelta(hours=22, minutes=59)]  # a minute before the horizon
    sink = _SlowFirstSend(build_stripe_client(settings), settings, workers=1, moved=moved)
    deps = poller(sink)
    deps.clock = lambda: moved[0]
    report = run_poll_pass(deps)
    assert (report.imported, report.gave_up) == (0, 1)
    accepted = _accepted(sandbox_server)
    assert 100 <= len(accepted) <= 200 and "h-499" not in accepted, len(accepted)
    with Session(deps.engine) as session:
        [alert] = session.exec(select(Alert).where(Alert.kind == "poller.gave_up")).all()
    assert alert.subject == "day.csv: not re-sent: its unacknowledged batches are over 23 h old"


def test_a_batch_backing_off_is_not_sent_again_once_its_horizon_passes(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """DESIGN: "no identifier is ever sent again more than 23 hours after its first send
    without an operator's explicit decision". The horizon was checked as a batch was handed
    to the sink, not before its retries: a batch first sent 22 h 59 min ago, answered 429
    (Retry-After: 60) as Stripe recovers, was sent again after its backoff, past the horizon,
    where Stripe no longer dedupes: billed twice, since its first send had landed (its answer
    lost). Now every request of a batch is checked: the pass gives the object up (horizon)
    and the batch waits, unacknowledged, for `poll --retry KEY --yes`. The sink's backoff
    moves the pass's clock (no real minutes spent)."""
    t0 = datetime.now(UTC) - timedelta(hours=23, minutes=5)
    stamp = int(datetime.now(UTC).timestamp()) - 60
    rows = [f"z-{i},{stamp},api_requests,cus_A,1\n" for i in range(100)]  # one batch
    _put(settings, "late.csv", rows, tmp_path)
    # every try lands, its answer lost: billed once, the batch never acknowledged
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=-1, after=True)
    assert run_poll_pass(poller(_one_worker(settings), at=t0)).retry_files == 1
    sandbox_server.admin.clear_faults()
    assert _accepted(sandbox_server) == sorted(f"z-{i}" for i in range(100))
    landed = len(sandbox_server.admin.duplicates())  # the first pass's retries, deduped
    sandbox_server.admin.inject_fault("POST", STREAM, 429, count=2, retry_after=60)
    deps, report = _pass_moved_by_its_backoffs(
        settings, poller, t0 + timedelta(hours=22, minutes=59)
    )
    again = sorted({d["identifier"] for d in sandbox_server.admin.duplicates()[landed:]})
    assert again == [], f"{len(again)} rows sent again {deps.clock() - t0} after their first send"
    assert (report.imported, report.gave_up) == (0, 1)
    with Session(deps.engine) as session:
        [alert] = session.exec(select(Alert).where(Alert.kind == "poller.gave_up")).all()
        [batch] = session.exec(select(PollerBatch)).all()
    assert alert.subject == "late.csv: not re-sent: its unacknowledged batches are over 23 h old"
    assert batch.acked_at is None
    assert _object(deps, "late.csv").status == "failed"


def _pass_moved_by_its_backoffs(
    settings: Settings,
    poller: Any,
    start: datetime,
    sink_type: Callable[..., StripeMeterEventSink] = StripeMeterEventSink,
) -> tuple[PollerDeps, PassReport]:
    """A pass from `start`, one request at a time, whose clock the sink's backoffs move (no
    real minutes spent); its sink a `sink_type` (a sink that changes what the sandbox
    answers as it goes, say)."""
    slept = [0.0]  # seconds (a datetime cannot move by the last sub-microsecond of a backoff)

    def sleep(seconds: float) -> None:
        slept[0] += seconds

    sink = sink_type(
        build_stripe_client(settings), settings, workers=1, clock=lambda: slept[0], sleep=sleep
    )
    deps = poller(sink)
    deps.clock = lambda: start + timedelta(seconds=slept[0])
    return deps, run_poll_pass(deps)


def test_a_lasting_failure_beside_a_batch_past_its_horizon_is_alerted_as_both(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path, make_app: Any
) -> None:
    """One pass, two causes: batch 0 (first sent an hour after batch 1: Stripe refused it
    then) fails its eight tries through a lasting outage (500s, Retry-After: 60), and their
    backoffs carry the pass past the horizon of batch 1 (first sent 23 h before, never
    acknowledged), held back before its first request. The sink raised the first failure
    only: the alert said "import failing for 6.0 h" and to retry before a time already
    past, never that batch 1 is past the window where Stripe dedupes (a retry re-sending
    it may bill twice: the operator's --yes after a look in Stripe). Now the alert, the
    object's reason and `poll --retry` name both, each batch with its advice."""
    from service.poller.retry import find_retry, reopen

    t0 = datetime.now(UTC) - timedelta(hours=23, minutes=5)
    stamp = int(datetime.now(UTC).timestamp()) - 60
    _put(
        settings,
        "late.csv",
        [f"y-{i},{stamp},api_requests,cus_A,1\n" for i in range(200)],
        tmp_path,
    )
    # batch 0 refused (forgotten: never billed); batch 1 lands, its answers lost
    sandbox_server.admin.inject_fault("POST", STREAM, 400, count=1)
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=-1, after=True)
    assert run_poll_pass(poller(_one_worker(settings), at=t0)).gave_up == 1
    deps = poller()
    plan = find_retry(deps.engine, "late.csv", deps.bucket.prefix, t0 + timedelta(minutes=10))
    assert plan is not None and not plan.needs_yes
    reopen(deps.engine, plan, confirmed=False)  # the cause fixed, `poll --retry late.csv`
    sandbox_server.admin.clear_faults()
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=-1)  # the outage begins
    again = run_poll_pass(poller(_one_worker(settings), at=t0 + timedelta(hours=1)))
    assert (again.retry_files, again.gave_up) == (1, 0)
    landed = len(sandbox_server.admin.duplicates())
    sandbox_server.admin.clear_faults()
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=8, retry_after=60)
    deps, report = _pass_moved_by_its_backoffs(
        settings, poller, t0 + timedelta(minutes=23 * 60 - 5)
    )
    assert (report.imported, report.gave_up) == (0, 1)
    assert len(sandbox_server.admin.duplicates()) == landed  # batch 1 not sent past it
    with Session(deps.engine) as session:
        [alert] = session.exec(select(Alert).where(Alert.kind == "poller.gave_up")).all()
    sent_at = "first sent {:%Y-%m-%d %H:%M:%S} UTC".format
    young = f"1 batch (rows 1 to 100: 100 rows, {sent_at(t0 + timedelta(hours=1))})"
    old = f"1 batch (rows 101 to 200: 100 rows, {sent_at(t0)})"
    assert alert.subject == (
        "late.csv: import failing for 6.0 h, and unacknowledged batches of it are over 23 h "
        "old; the poller gave up"
    )
    deadline = f"{t0 + timedelta(hours=24):%Y-%m-%d %H:%M}"
    assert (
        f"Given up for it: {young}, never acknowledged: fix the cause (Stripe's status, the "
        f"API key, the network), then retry before {deadline} UTC" in alert.message
    ), alert.message
    assert (
        f"Past the 23 h horizon: {old}: Stripe may no longer dedupe its rows, so "
        "`meterfix poll --retry late.csv` sends nothing without --yes; check in Stripe which "
        "of them were accepted, then run `meterfix poll --retry late.csv --yes`"
    ) in alert.message, alert.message
    assert alert.detail is not None and alert.detail["why"] == "lasting"
    error = _object(deps, "late.csv").error or ""
    assert "MeterEventSendError: meter event stream request failed after 8 attempts" in error
    assert "1 unacknowledged batches (100 rows) were first sent at" in error, error
    cli = make_app(settings).test_cli_runner()
    shown = cli.invoke(args=["poll", "--retry", "late.csv"], catch_exceptions=False)
    assert shown.exit_code == 1, shown.output
    assert "MeterEventSendError: meter event stream request failed after 8" in shown.output
    assert "more than 23 h ago; sending them again could bill twice" in shown.output
    assert f"{old} was first sent more than 23 h ago" in shown.output
    assert len(sandbox_server.admin.duplicates()) == landed


def test_a_batch_past_its_horizon_beside_a_lasting_failure_is_alerted_as_both(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """The same two causes the other way round: batch 0 (first sent 23 h before) is held at
    its horizon after backing off, then batch 1 (first sent an hour later: Stripe refused
    it then) fails its eight tries. The sink raised the first failure, the horizon, and the
    alert never said that Stripe had been failing for six hours. Now it says both."""
    t0 = datetime.now(UTC) - timedelta(hours=23, minutes=5)
    stamp = int(datetime.now(UTC).timestamp()) - 60
    rows = [f"x-{i},{stamp},api_requests,cus_A,1\n" for i in range(200)]
    _put(settings, "late.csv", rows, tmp_path)
    # batch 0's eight tries land, their answers lost; batch 1 refused (forgotten)
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=8, after=True)
    sandbox_server.admin.inject_fault("POST", STREAM, 400, count=1)
    assert run_poll_pass(poller(_one_worker(settings), at=t0)).retry_files == 1
    sandbox_server.admin.clear_faults()
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=-1)
    again = run_poll_pass(poller(_one_worker(settings), at=t0 + timedelta(hours=1)))
    assert (again.retry_files, again.gave_up) == (1, 0)
    landed = len(sandbox_server.admin.duplicates())
    sandbox_server.admin.clear_faults()
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=-1, retry_after=60)
    deps, report = _pass_moved_by_its_backoffs(
        settings, poller, t0 + timedelta(minutes=23 * 60 - 3)
    )
    assert (report.imported, report.gave_up) == (0, 1)
    assert len(sandbox_server.admin.duplicates()) == landed
    with Session(deps.engine) as session:
        [alert] = session.exec(select(Alert).where(Alert.kind == "poller.gave_up")).all()
    assert alert.subject == (
        "late.csv: import failing for 6.0 h, and unacknowledged batches of it are over 23 h "
        "old; the poller gave up"
    )
    sent_at = "first sent {:%Y-%m-%d %H:%M:%S} UTC".format
    young = f"1 batch (rows 101 to 200: 100 rows, {sent_at(t0 + timedelta(hours=1))})"
    assert f"Given up for it: {young}, never acknowledged" in alert.message, alert.message
    old = f"1 batch (rows 1 to 100: 100 rows, {sent_at(t0)})"
    assert f"Past the 23 h horizon: {old}: Stripe may no longer dedupe" in alert.message
    error = _object(deps, "late.csv").error or ""
    assert "another batch failed beside them: MeterEventSendError: meter event" in error, error


def test_poll_retry_yes_does_not_resend_batches_stripe_acknowledged(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path, make_app: Any
) -> None:
    """README: the poller "records, per object and ETag, every batch it sent (when first
    sent, when acknowledged)"; `meterfix poll --retry KEY` "first prints what it will re-send
    (batches, rows, first-send times) and, past the 23 h horizon, sends nothing without
    `--yes`"; the alert says to "run `poll --retry KEY --yes` to send the unacknowledged
    batches again"; docs/architecture.md: "no identifier is ever sent again more than 23
    hours after its first send without an operator's explicit decision".

    Instead: "unacknowledged" is every batch numbered at or after the contiguous prefix
    (`ObjectProgress.unacked`, `past_horizon`), acknowledged or not. Batch 3 of a file fails
    while batches 4.. in flight beside it are acknowledged; a day later `poll --retry --yes`
    prints all of them as "sent before and never acknowledged" and re-sends them (`forget_
    unacked` drops their records, acknowledged ones included): rows Stripe accepted a day
    earlier go out again past its 24 h dedupe window, billed twice, although meterfix knew
    they were acknowledged and the operator consented to re-send only unacknowledged ones."""
    day_ago = datetime.now(UTC) - timedelta(hours=24)
    stamp = int(day_ago.timestamp()) - 60
    _put(
        settings,
        "day.csv",
        [f"r-{i},{stamp},api_requests,cus_A,1\n" for i in range(1000)],
        tmp_path,
    )
    sink = _OneBatchFails(
        build_stripe_client(settings), settings, workers=2, base_delay=0.01, row="r-300", others=9
    )
    first = run_poll_pass(poller(sink, at=day_ago))
    assert first.retry_files == 1
    with Session(poller().engine) as session:
        batches = session.exec(select(PollerBatch)).all()
    acked_after_gap = sorted(b.batch_number for b in batches if b.acked_at and b.batch_number > 3)
    assert _object(poller(), "day.csv").acked_batches == 3 and acked_after_gap
    cli = make_app(settings).test_cli_runner()
    retry = cli.invoke(args=["poll", "--retry", "day.csv", "--yes"], catch_exceptions=False)
    assert retry.exit_code == 0, retry.output
    resent = sorted({d["identifier"] for d in sandbox_server.admin.duplicates()})
    assert resent == [], (
        f"{len(resent)} rows of batches {acked_after_gap} (acknowledged a day ago) sent again; "
        f"the CLI said: {retry.output!r}"
    )


def _sent_during_an_outage(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path, key: str
) -> tuple[datetime, list[str]]:
    """300 rows, `r-0` ... (`now - 60 s`): the first 200 put under `key` and sent 23.5 h ago
    while the stream answered 500 (two batches, never acknowledged; the stream still fails)."""
    t0 = datetime.now(UTC) - timedelta(hours=23, minutes=30)
    stamp = int(datetime.now(UTC).timestamp()) - 60
    rows = [f"r-{i},{stamp},api_requests,cus_A,1\n" for i in range(300)]
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=-1)
    _put(settings, key, rows[:200], tmp_path)
    assert run_poll_pass(poller(at=t0)).retry_files == 1
    return t0, rows


def test_rows_an_overwritten_version_sent_unacknowledged_a_day_ago_are_not_taken_for_billed(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path, make_app: Any
) -> None:
    """DESIGN: "no identifier is ever sent again more than 23 hours after its first send
    without an operator's explicit decision"; "no usage lost".

    Instead: version 1 of a file went out during an outage (nothing acknowledged); the
    customer overwrote it an hour later with the same rows and more; version 2 failed too.
    After the outage, `poll --retry KEY` (within the deadline the alert gave, counted from
    version 2's own first send) took version 1's unacknowledged batches, 23.5 h old, for
    delivered (`OtherVersions._delivered`): it sent the 100 new rows, said the other 200
    were "sent before" and resolved the alert. Stripe never had them. Now the retry names
    those batches and sends nothing without --yes; with it, every row is billed once."""
    t0, rows = _sent_during_an_outage(settings, sandbox_server, poller, tmp_path, "usage.csv")
    _put(settings, "usage.csv", rows, tmp_path)  # overwritten: the same rows and 100 more
    assert run_poll_pass(poller(at=t0 + timedelta(hours=1))).retry_files == 1
    assert run_poll_pass(poller(at=t0 + timedelta(hours=7, minutes=1))).gave_up == 1
    with Session(poller().engine) as session:
        [alert] = session.exec(select(Alert).where(Alert.kind == "poller.gave_up")).all()
    # the deadline counts from version 1's send of the rows (it said t0 + 24 h: past it)
    deadline = (t0 + timedelta(hours=23)).astimezone(UTC)
    assert f"`meterfix poll --retry usage.csv` before {deadline:%Y-%m-%d %H:%M} UTC" in (
        alert.message
    )
    sandbox_server.admin.clear_faults()
    assert _accepted(sandbox_server) == []
    cli = make_app(settings).test_cli_runner()
    refused = cli.invoke(args=["poll", "--retry", "usage.csv"], catch_exceptions=False)
    assert refused.exit_code == 1, refused.output
    assert "An earlier version of usage.csv (ETag " in refused.output
    assert "2 batches (rows 1 to 200: 200 rows, first sent " in refused.output
    assert "nothing sent: pass --yes" in refused.output
    assert _accepted(sandbox_server) == []
    confirmed = cli.invoke(args=["poll", "--retry", "usage.csv", "--yes"], catch_exceptions=False)
    assert confirmed.exit_code == 0, confirmed.output
    assert sorted(_accepted(sandbox_server)) == sorted(f"r-{i}" for i in range(300))
    assert not sandbox_server.admin.duplicates()


def test_a_pass_stops_on_rows_another_file_sent_unacknowledged_a_day_ago(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path, make_app: Any
) -> None:
    """The same rows under another key (a copy), their first file's batches never
    acknowledged and 23.5 h old: they were left out as delivered, silently. Now the pass
    gives the copy up with an alert naming the first file's retry; that retry's --yes counts
    those batches as never sent, and the copy's retry sends every row once."""
    _, rows = _sent_during_an_outage(settings, sandbox_server, poller, tmp_path, "first.csv")
    stamp = int(datetime.now(UTC).timestamp()) - 60
    # overwritten with another row; a copy holds the first rows and more
    _put(settings, "first.csv", [f"z-0,{stamp},api_requests,cus_A,1\n"], tmp_path)
    sandbox_server.admin.clear_faults()
    assert run_poll_pass(poller()).imported == 1
    _put(settings, "copy.csv", rows, tmp_path)
    report = run_poll_pass(poller())
    assert report.gave_up == 1
    assert _accepted(sandbox_server) == ["z-0"]
    with Session(poller().engine) as session:
        [alert] = session.exec(select(Alert).where(Alert.kind == "poller.gave_up")).all()
    assert alert.subject == "copy.csv: not sent: first.csv sent rows of it in batches over 23 h old"
    assert "`meterfix poll --retry first.csv --yes`" in alert.message
    cli = make_app(settings).test_cli_runner()
    decided = cli.invoke(args=["poll", "--retry", "first.csv", "--yes"], catch_exceptions=False)
    assert decided.exit_code == 0, decided.output
    assert "first.csv is imported: nothing of it is sent again" in decided.output
    retried = cli.invoke(args=["poll", "--retry", "copy.csv"], catch_exceptions=False)
    assert retried.exit_code == 0, retried.output
    assert sorted(_accepted(sandbox_server)) == sorted(["z-0", *(f"r-{i}" for i in range(300))])
    assert not sandbox_server.admin.duplicates()


def test_a_reopened_object_backs_off_from_the_start_again(sqlite_url: str) -> None:
    """`PollerStore.reopen` (`poll --retry KEY`): "take the object on the next pass, as if it
    never failed". Its count of attempts was kept: after ten failing passes and a retry, the
    next transient failure waited up to 30 minutes, not 30 s."""
    from service.db import make_engine
    from service.poller.failures import BACKOFF_BASE, judge
    from service.poller.progress import ProgressStore
    from service.poller.versions import PollerStore

    engine = make_engine(sqlite_url)
    store = PollerStore(engine)
    now = datetime.now(UTC)
    obj = ObjectInfo(key="day.csv", etag="e1", size=10, last_modified=now)
    for _ in range(10):
        store.claim(obj)
    store.reopen(obj)
    assert store.claim(obj) == 1  # the first attempt since the operator's retry
    verdict = judge(TimeoutError("Stripe timed out"), ProgressStore(engine).load(obj), now, 3600)
    engine.dispose()
    assert verdict.next_attempt_at is not None
    assert verdict.next_attempt_at - now <= BACKOFF_BASE


def test_a_row_valid_only_on_the_resume_in_a_batch_acknowledged_before_is_billed(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """README: a pass "leaves out a batch Stripe acknowledged past the prefix when it cuts it
    the same" and "no usage is lost": every row is billed once, or handed to remediation.

    Instead: the last, partial batch keeps its cut (first row, rows spanned) when a row of it
    that failed validation on the failing pass (`no_meter`: the meter did not exist yet) is
    valid on the resume (the meter made meanwhile). The batch was acknowledged beside the one
    that failed, so the resume leaves it out whole: the row that is valid now is neither sent
    (its batch left out) nor in the failed-records file (it fails no longer)."""
    stamp = int(time.time()) - 60
    rows = [f"g-{i},{stamp},api_requests,cus_A,1\n" for i in range(250)]
    rows[220] = f"g-220,{stamp},new_meter,cus_A,7\n"  # batch 2 (rows 200-249), no meter yet
    _put(settings, "gap.csv", rows, tmp_path)
    sink = _OneBatchFails(
        build_stripe_client(settings), settings, workers=2, base_delay=0.01, row="g-150", others=2
    )
    first = run_poll_pass(poller(sink))
    assert first.retry_files == 1
    with Session(poller().engine) as session:
        acked = sorted(b.batch_number for b in session.exec(select(PollerBatch)) if b.acked_at)
    assert acked == [0, 2]  # batch 1 failed; batch 2, in flight beside it, was acknowledged
    sandbox_server.admin.create_meter("new_meter")
    later = datetime.now(UTC) + timedelta(minutes=5)
    second = run_poll_pass(poller(at=later))
    assert (second.imported, second.failed_rows) == (1, 0)
    billed = _accepted(sandbox_server)
    assert "g-220" in billed, "row g-220 (valid now) never sent and never handed to remediation"
    assert sorted(billed) == sorted(f"g-{i}" for i in range(250))
    assert not sandbox_server.admin.duplicates()
    with Session(poller().engine) as session:
        object_row = _object(poller(), "gap.csv")
        batches = session.exec(select(PollerBatch)).all()
    assert object_row.acked_batches == 3
    assert all(b.acked_at is not None for b in batches)


def test_late_rows_whose_send_fails_are_sent_by_the_next_pass(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """The rows of an acknowledged batch that only the resume sends (above) are recorded as
    sent once Stripe takes them: when that request fails, the next pass sends them, once."""
    stamp = int(time.time()) - 60
    rows = [f"h-{i},{stamp},api_requests,cus_A,1\n" for i in range(250)]
    rows[230] = f"h-230,{stamp},new_meter,cus_A,7\n"
    _put(settings, "late.csv", rows, tmp_path)
    client = build_stripe_client(settings)
    first = run_poll_pass(
        poller(_OneBatchFails(client, settings, workers=2, base_delay=0.01, row="h-150", others=2))
    )
    assert first.retry_files == 1
    sandbox_server.admin.create_meter("new_meter")
    at = datetime.now(UTC)
    failing = _OneBatchFails(client, settings, workers=2, base_delay=0.01, row="h-230")
    second = run_poll_pass(poller(failing, at=at + timedelta(minutes=5)))
    assert second.retry_files == 1
    assert "h-230" not in _accepted(sandbox_server)
    third = run_poll_pass(poller(at=at + timedelta(minutes=10)))
    assert (third.imported, third.failed_rows) == (1, 0)
    assert sorted(_accepted(sandbox_server)) == sorted(f"h-{i}" for i in range(250))
    assert not sandbox_server.admin.duplicates()
    fourth = run_poll_pass(poller(at=at + timedelta(minutes=15)))
    assert fourth.imported == 0
    assert not sandbox_server.admin.duplicates()
