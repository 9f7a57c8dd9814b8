"""The poller and versions in motion: a file still being written whatever the writer's clock
says, a failing version deleted from the bucket, and the same bytes uploaded again after
switching from `on` to `index`. Real parts: a file:// bucket and moto S3, the sandbox as
Stripe through the real SDK, SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlmodel import Session, select

from service.adapters.meter_events import StripeMeterEventSink
from service.adapters.stripe_client import build_stripe_client
from service.config import Settings
from service.models import Alert, BucketObject, ObjectStatus
from service.poller.passes import run_poll_pass
from service.poller.store import count_objects
from service.poller.versions import GONE
from tests.conftest import SandboxServer
from tests.integration import test_poller
from tests.integration.test_poller import HEADER, Harness, _rows
from tests.integration.test_poller_listing_edges import _write

settings, harness = test_poller.settings, test_poller.harness  # its fixtures


def _later(harness: Harness, seconds: float) -> None:
    """The poller's own clock moved on `seconds`."""
    harness.deps.clock = lambda: datetime.now(UTC) + timedelta(seconds=seconds)


def _values(sandbox_server: SandboxServer) -> dict[str, str]:
    return {e["identifier"]: e["payload"]["value"] for e in sandbox_server.admin.meter_events()}


@pytest.mark.parametrize("skew", [-60, -3600, 3600])
def test_a_file_still_being_written_is_not_read_whatever_the_writers_clock(
    harness: Harness, sandbox_server: SandboxServer, skew: int
) -> None:
    """A file counted as settled when the host's clock said its mtime was 30 s old: a writer
    whose clock is behind (a share mounted from another host) had its half-written file read,
    its last row cut short (`125` billed as `12`) and then left out of the finished version as
    sent. A version ending mid-line is read once two listings at least 30 s apart by the
    poller's own clock found it unchanged; the finished version is read at once."""
    ts = int(time.time()) - 60
    start = HEADER + _rows("a", 2, ts) + f"a-2,{ts},api_requests,cus_A,12"
    path = _write(harness, "a.csv", start, time.time() + skew)
    first = run_poll_pass(harness.deps)
    assert (first.sent, first.deferred) == (0, 1), first
    assert "ends mid-line" in (harness.objects()["a.csv"].error or "")
    with path.open("a") as out:  # the writer finishes the row
        out.write("5\n")
    _write(harness, "a.csv", path.read_text(), time.time() + skew + 1)
    _later(harness, 60)
    second = run_poll_pass(harness.deps)
    assert second.imported == 1, second
    assert _values(sandbox_server) == {"a-0": "1", "a-1": "2", "a-2": "125"}


@pytest.mark.parametrize("skew", [-3600, 3600])
def test_a_finished_file_ending_mid_line_is_read_once_unchanged_between_two_listings(
    harness: Harness, sandbox_server: SandboxServer, skew: int
) -> None:
    """A file whose last row has no line end is read once the poller listed it unchanged
    30 s apart by its own clock: not at once because its mtime looks old, nor an hour later
    because the writer's clock is an hour ahead. A listing that finds another mtime (the
    same bytes touched) starts the wait again."""
    ts = int(time.time()) - 60
    content = HEADER + _rows("b", 1, ts) + f"b-1,{ts},api_requests,cus_A,7"
    mtime = time.time() + skew
    _write(harness, "b.csv", content, mtime)
    assert run_poll_pass(harness.deps).deferred == 1
    _later(harness, 10)  # not 30 s apart yet: not taken
    assert (run_poll_pass(harness.deps).imported, _values(sandbox_server)) == (0, {})
    _write(harness, "b.csv", content, mtime + 5)  # touched: the same bytes
    _later(harness, 40)
    touched = run_poll_pass(harness.deps)
    assert (touched.imported, touched.deferred) == (0, 1), touched
    _later(harness, 80)
    assert run_poll_pass(harness.deps).imported == 1
    assert _values(sandbox_server) == {"b-0": "1", "b-1": "7"}


def test_an_s3_version_ending_mid_line_overwritten_by_its_finished_version(
    settings: Settings, s3_endpoint: str, sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """S3 (moto): a tool uploading the file as it grows put a version whose last row is cut
    short. It waits for a second listing; the finished version overwrites it and is read, and
    the version no listing has any more is marked gone, not left waiting for ever."""
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="usage")
    s3 = settings.model_copy(update={"bucket_url": "s3://usage/in", "s3_endpoint_url": s3_endpoint})
    h = Harness(s3, tmp_path)
    ts = int(time.time()) - 60
    h.put("c.csv", HEADER + f"c-0,{ts},api_requests,cus_A,3", tmp_path)
    assert run_poll_pass(h.deps).deferred == 1
    h.put("c.csv", HEADER + f"c-0,{ts},api_requests,cus_A,31\n", tmp_path)
    _later(h, 60)
    assert run_poll_pass(h.deps).imported == 1
    assert _values(sandbox_server) == {"c-0": "31"}
    with Session(h.engine) as session:
        statuses = sorted(o.status for o in session.exec(select(BucketObject)))
    assert statuses == ["imported", "skipped"]
    h.engine.dispose()


class _Down(StripeMeterEventSink):
    """Stripe's meter event stream out of reach."""

    def send_batch(self, batch: Any) -> int:
        raise ConnectionError("network went away")


@pytest.fixture
def failing(settings: Settings, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(settings, tmp_path, sink=_Down(build_stripe_client(settings), settings, workers=1))
    yield h
    h.engine.dispose()


def test_a_failing_version_deleted_from_the_bucket_is_marked_gone(
    failing: Harness, sandbox_server: SandboxServer
) -> None:
    """A version whose import kept failing (backing off) and was then deleted stayed `seen`
    for ever: the digests counted it in the backlog each day. A listing without it marks it
    gone; put back with the same bytes it is taken again, and retried while it fails."""
    content = HEADER + _rows("d", 2)
    path = _write(failing, "d.csv", content, time.time() - 120)
    assert run_poll_pass(failing.deps).retry_files == 1
    path.unlink()
    _later(failing, 3600)
    run_poll_pass(failing.deps)
    obj = failing.objects()["d.csv"]
    assert (obj.status, (obj.error or "").startswith(GONE)) == ("skipped", True), obj
    assert obj.next_attempt_at is None
    with failing.engine.connect() as connection:
        assert count_objects(connection, ObjectStatus.SEEN) == 0
    _write(failing, "d.csv", content, time.time() - 120)  # back: still failing
    _later(failing, 7200)
    assert run_poll_pass(failing.deps).retry_files == 1
    assert failing.objects()["d.csv"].status == "seen"  # backing off, not taken for done
    _later(failing, 4 * 3600)
    assert run_poll_pass(failing.deps).retry_files == 1


@pytest.fixture
def index_harness(settings: Settings, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(settings.model_copy(update={"mfx_poller": "index"}), tmp_path)
    h.deps.sink, h.deps.meters = None, None
    yield h
    h.engine.dispose()


@pytest.mark.parametrize(("hours", "alerted"), [(26, [("warning", 3)]), (1, [])])
def test_the_same_bytes_uploaded_again_after_switching_from_on_to_index_are_alerted(
    harness: Harness,
    index_harness: Harness,
    sandbox_server: SandboxServer,
    hours: int,
    alerted: list[tuple[str, int]],
) -> None:
    """Switched from `on` to `index` (Stripe's connector now imports the bucket), the same
    bytes uploaded again under a key the poller imported are a new upload to the connector,
    which bills its rows again past its 24-hour dedupe: for a version indexed the poller
    raised `poller.taken_again`, for one it imported it said nothing. It stays `imported`,
    with what it sent."""
    content = HEADER + _rows("e", 3)
    now = time.time()
    _write(harness, "day.csv", content, now - hours * 3600)
    assert run_poll_pass(harness.deps).imported == 1
    _write(index_harness, "day.csv", content, now - 60)  # the same bytes, uploaded again
    assert run_poll_pass(index_harness.deps).indexed == 1
    with Session(index_harness.engine) as session:
        alerts = session.exec(select(Alert).where(Alert.kind == "poller.taken_again")).all()
    assert [(a.severity, a.rows) for a in alerts] == alerted
    obj = index_harness.objects()["day.csv"]
    assert (obj.status, obj.sent, obj.rows) == ("imported", 3, 3)
    again = run_poll_pass(index_harness.deps)  # the same upload is not read twice
    assert again.indexed == 0
    assert len(sandbox_server.admin.meter_events()) == 3
