"""The 23 h re-send horizon for rows a version of an object holds that another version (here
the key before it was overwritten) sent in a batch Stripe never acknowledged, against real
local parts (the sandbox through the real stripe SDK, a file:// bucket, SQLite, and PostgreSQL
when MFX_TEST_DATABASE_URL is set). Each test failed on the code before its fix."""

# ruff: noqa: F811  (fixtures imported from the module that defines them)
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from service.adapters.meter_events import StripeMeterEventSink
from service.config import Settings
from service.models import Alert, BucketObject, PollerBatch
from service.poller.pass_deps import PollerDeps
from service.poller.passes import PassReport, run_poll_pass
from tests.conftest import SandboxServer
from tests.integration.test_poller_billing_gaps import _accepted, _one_worker
from tests.integration.test_poller_incidents import _pass_moved_by_its_backoffs
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
    t0, rows, landed = _lost_answers(settings, sandbox_server, poller, tmp_path)
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
    t0, rows, landed = _lost_answers(settings, sandbox_server, poller, tmp_path)
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


def test_a_lasting_failure_beside_rows_of_an_overwritten_version_past_their_horizon_is_both(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """Two causes in one pass, the horizon another version's: batch 0 (new rows) fails its
    eight tries through an outage lasting since 16 h 50 min after t0 (500s, Retry-After: 60),
    and their backoffs carry the pass past the horizon of the earlier version's batch
    (first sent at t0, never acknowledged) whose rows batch 1 holds, held before its first
    request. `horizon_passed` looked at this version's own batches only: the alert said
    "import failing for 6.0 h" and to retry before t0 + 23 h, a time already past, never
    that those rows are past the window where Stripe dedupes. Now the object's error, the
    subject and the advice name both, the deadline counted from the batches not past it."""
    t0, rows, landed = _lost_answers(settings, sandbox_server, poller, tmp_path)
    _put(settings, "late.csv", [*_lines("y", 100), *rows], tmp_path)
    failing = t0 + timedelta(hours=16, minutes=50)
    _outage_begins(settings, sandbox_server, poller, failing)
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=-1, retry_after=60)
    deps, report = _pass_moved_by_its_backoffs(
        settings, poller, t0 + timedelta(hours=22, minutes=55)
    )
    assert len(sandbox_server.admin.duplicates()) == landed  # the old rows not sent past it
    _assert_given_up_beside_a_failure(report)
    alert, (first, _) = _gave_up(deps)
    assert alert.subject == (
        "late.csv: import failing for 6.0 h, and unacknowledged batches of it are over 23 h "
        "old; the poller gave up"
    )
    sent_at = "first sent {:%Y-%m-%d %H:%M:%S} UTC".format
    young = f"2 batches (rows 1 to 200: 200 rows, {sent_at(failing)})"
    deadline = f"{failing + timedelta(hours=23):%Y-%m-%d %H:%M}"
    assert (
        f"Given up for it: {young}, never acknowledged: fix the cause (Stripe's status, the "
        f"API key, the network), then retry before {deadline} UTC" in alert.message
    ), alert.message
    old = f"1 batch (rows 1 to 100: 100 rows, {sent_at(t0)})"
    assert (
        f"Past the 23 h horizon: {old} of an earlier version of late.csv (ETag {first.etag}): "
        "Stripe may no longer dedupe its rows, so `meterfix poll --retry late.csv` sends "
        "nothing without --yes"
    ) in alert.message, alert.message
    assert f"before {t0 + timedelta(hours=23):%Y-%m-%d %H:%M} UTC" not in alert.message
    assert alert.detail is not None
    assert (alert.detail["why"], alert.detail["earlier_versions_past_horizon_batches"]) == (
        "lasting",
        1,
    )


def test_a_batch_failing_in_flight_is_kept_when_a_batch_is_held_as_it_is_taken(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """The other version's horizon reached as a batch is taken: batch 0 (new rows) goes
    through after two 429s (Retry-After: 60), then the outage begins; batch 1 (new rows) in
    flight fails its eight tries, and batch 2 (the earlier version's rows) is taken past
    their horizon. `OtherVersions.check_horizon` raised in the stream of batches, and the
    sink raised that, dropping batch 1's failure: the object's error and the alert said
    only that the rows are over 23 h old. Now the stream ends there and both are kept; the
    pass moved the file on (batch 0 acknowledged), so the failure alone would back off and
    the horizon names the verdict, as for the file's own batches."""
    t0, rows, landed = _lost_answers(settings, sandbox_server, poller, tmp_path)
    _put(settings, "late.csv", [*_lines("y", 100), *_lines("w", 100), *rows], tmp_path)
    _outage_begins(settings, sandbox_server, poller, t0 + timedelta(hours=16, minutes=50))
    sandbox_server.admin.inject_fault("POST", STREAM, 429, count=2, retry_after=60)
    deps, report = _pass_moved_by_its_backoffs(
        settings,
        poller,
        t0 + timedelta(hours=22, minutes=59),
        lambda *args, **kwargs: _OutageAfterFirstBatch(*args, sandbox=sandbox_server, **kwargs),
    )
    assert len(sandbox_server.admin.duplicates()) == landed
    assert [i for i in _accepted(sandbox_server) if not i.startswith("z-")] == sorted(
        f"y-{i}" for i in range(100)
    )
    _assert_given_up_beside_a_failure(report)
    alert, (_, last) = _gave_up(deps)
    assert alert.subject == "late.csv: not re-sent: its unacknowledged batches are over 23 h old"
    assert "another batch failed beside them: MeterEventSendError" in alert.message
    assert "MeterEventSendError" in (last.error or "")


class _OutageAfterFirstBatch(StripeMeterEventSink):
    """The sandbox answers 500 (Retry-After: 60) to every request once Stripe took a batch."""

    def __init__(self, *args: Any, sandbox: SandboxServer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sandbox, self.outage = sandbox, False

    def send_batch(self, batch: Sequence[Mapping[str, Any]]) -> int:
        sent = super().send_batch(batch)
        if not self.outage:  # one pool thread (`workers=1`): no other batch is sent meanwhile
            self.outage = True
            self.sandbox.admin.inject_fault("POST", STREAM, 500, count=-1, retry_after=60)
        return sent


def _outage_begins(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, at: datetime
) -> None:
    """A pass at `at` whose every request is answered 500 (nothing lands): the file's
    batches recorded as first sent then, failing since then."""
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=-1)
    again = run_poll_pass(poller(_one_worker(settings), at=at))
    assert (again.retry_files, again.gave_up) == (1, 0), again
    sandbox_server.admin.clear_faults()


def _gave_up(deps: PollerDeps) -> tuple[Alert, list[BucketObject]]:
    """The gave-up alert, and the key's versions (the earlier first)."""
    with Session(deps.engine) as session:
        [alert] = session.exec(select(Alert).where(Alert.kind == "poller.gave_up")).all()
        versions = list(session.exec(select(BucketObject).order_by(col(BucketObject.id))).all())
    return alert, versions


def _lines(prefix: str, count: int) -> list[str]:
    stamp = int(datetime.now(UTC).timestamp()) - 60
    return [f"{prefix}-{i},{stamp},api_requests,cus_A,1\n" for i in range(count)]


def _lost_answers(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> tuple[datetime, list[str], int]:
    """`late.csv` of 100 rows (`z-…`, one batch) imported at t0, 23 h 05 min ago, every try
    landing with its answer lost (billed once, the batch never acknowledged): (t0, the rows,
    the sends Stripe took or deduped by then)."""
    t0 = datetime.now(UTC) - timedelta(hours=23, minutes=5)
    rows = _lines("z", 100)
    _put(settings, "late.csv", rows, tmp_path)
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=-1, after=True)
    assert run_poll_pass(poller(_one_worker(settings), at=t0)).retry_files == 1
    sandbox_server.admin.clear_faults()
    assert _accepted(sandbox_server) == sorted(r.split(",")[0] for r in rows)
    return t0, rows, len(sandbox_server.admin.duplicates())  # the first pass's retries, deduped


def _backing_off(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, start: datetime
) -> tuple[PollerDeps, PassReport]:
    """A pass from `start` whose first two requests are answered 429 (Retry-After: 60)."""
    sandbox_server.admin.inject_fault("POST", STREAM, 429, count=2, retry_after=60)
    return _pass_moved_by_its_backoffs(settings, poller, start)


def _assert_given_up_beside_a_failure(report: PassReport) -> None:
    """Given up for the horizon of the earlier version's batch, and its error names the
    batch that failed its eight tries beside it."""
    assert (report.imported, report.gave_up) == (0, 1)
    [error] = report.errors
    assert error.startswith("late.csv: HorizonPassed: 1 unacknowledged batches of an earlier ")
    assert (
        "another batch failed beside them: MeterEventSendError: meter event stream request "
        "failed after 8 attempts"
    ) in error, error


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
