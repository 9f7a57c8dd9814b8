"""The poller's listing at its edges: a version gone between the listing and the read, the
same bytes uploaded again under the same key (index mode), and switching index -> on."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

import sandbox.intake
from service.config import Settings
from service.models import Alert
from service.poller.passes import run_poll_pass
from tests.conftest import SandboxServer
from tests.integration import test_poller
from tests.integration.test_poller import HEADER, Harness, _rows

settings, harness = test_poller.settings, test_poller.harness  # its fixtures

DAY = 24 * 3600


@pytest.fixture
def index_harness(settings: Settings, tmp_path: Path) -> Iterator[Harness]:
    """The poller in index mode (Stripe's connector imports the bucket)."""
    h = Harness(settings.model_copy(update={"mfx_poller": "index"}), tmp_path)
    h.deps.sink, h.deps.meters = None, None
    yield h
    h.engine.dispose()


def _write(harness: Harness, key: str, content: str, mtime: float) -> Path:
    """Write the object as a customer's own tool would (not meterfix's upload, which skips
    identical bytes), with the LastModified `mtime`."""
    path = Path(harness.settings.bucket_url.removeprefix("file://")) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    os.utime(path, (mtime, mtime))
    return path


def test_a_version_deleted_before_it_was_read_and_put_back_is_imported(
    harness: Harness, sandbox_server: SandboxServer
) -> None:
    """README: "an object version ... new when its (key, ETag) pair was not seen before" and
    the poller promises no usage lost. An object deleted between the listing and the read
    (a sync tool's delete-then-put, a file moved away and back) was marked `skipped` under its
    ETag; put back with the same bytes it was that pair again, never read: its rows were never
    billed, and nothing but a log line said so."""
    now = time.time()
    _write(harness, "a.csv", HEADER + _rows("a", 2), now - 120)
    content = HEADER + _rows("b", 3)
    b = _write(harness, "b.csv", content, now - 60)
    aside = b.with_name("b.csv.aside")

    def move_b_away(_number: int, _total: int, key: str) -> None:
        if key == "a.csv" and b.exists():
            b.rename(aside)

    harness.deps.progress = move_b_away
    first = run_poll_pass(harness.deps)
    assert (first.imported, first.skipped) == (1, 1)
    aside.rename(b)  # the same version back
    harness.deps.progress = None
    second = run_poll_pass(harness.deps)
    accepted = sorted(e["identifier"] for e in sandbox_server.admin.meter_events())
    assert accepted == ["a-0", "a-1", "b-0", "b-1", "b-2"], (second, harness.objects()["b.csv"])
    assert harness.objects()["b.csv"].status == "imported"
    harness.engine.dispose()


@pytest.mark.parametrize(("hours", "alerted"), [(26, [("warning", 3)]), (1, [])])
def test_the_same_bytes_uploaded_again_a_day_later_are_alerted_in_index_mode(
    index_harness: Harness, hours: int, alerted: list[tuple[str, int]]
) -> None:
    """README (alerts, warning): "(`MFX_POLLER=index`) a new object version holding rows an
        earlier version held that was uploaded more than a day before ... (`poller.taken_again`:
        Stripe's S3 connector takes a version whole and bills them again". The same bytes uploaded
        again under the same key are a new upload to Stripe's connector (a new LastModified), but
        their ETag is the same: the poller took the pair for one it had indexed and said nothing,
        while the connector billed every row a second time. Within Stripe's 24-hour dedupe window
    the upload is read again but nothing is alerted."""
    h = index_harness
    content = HEADER + _rows("d", 3)
    now = time.time()
    _write(h, "day.csv", content, now - hours * 3600)
    assert run_poll_pass(h.deps).indexed == 1
    _write(h, "day.csv", content, now - 60)  # the same bytes, uploaded again
    assert run_poll_pass(h.deps).indexed == 1
    with Session(h.engine) as session:
        alerts = session.exec(select(Alert).where(Alert.kind == "poller.taken_again")).all()
    assert [(a.severity, a.rows) for a in alerts] == alerted
    assert all("day.csv" in a.subject for a in alerts)
    again = run_poll_pass(h.deps)  # the same upload is not read, nor alerted, twice
    with Session(h.engine) as session:
        counts = [a.count for a in session.exec(select(Alert))]
    assert (again.indexed, counts) == (0, [1] if alerted else [])
    assert [r.identifier for r in h.imported()] == ["d-0", "d-1", "d-2"]


def test_switching_from_index_to_on_does_not_send_again_what_the_connector_imported(
    index_harness: Harness,
    harness: Harness,
    sandbox_server: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """README: `index`: "only record identifier -> (object, row) so reports about rows
    Stripe's connector imported can be traced"; `on`: the poller leaves out "a row whose
    identifier the poller already sent from another object version". With index mode, Stripe's
    connector billed the day's file; switched to `on` a day later, the poller took the day's
    next rewrite (rows so far + new ones) and sent every row again: the indexed version's rows
    count as sent by no one, and past Stripe's 24-hour dedupe they are billed twice."""
    ts = int(time.time()) - 60
    indexing, importing = index_harness, harness
    indexing.put("day.csv", HEADER + _rows("d", 3, ts), tmp_path)
    assert run_poll_pass(indexing.deps).indexed == 1  # Stripe's connector imports it
    later = DAY + 3600
    monkeypatch.setattr(sandbox.intake, "now", lambda: time.time() + later)
    importing.deps.clock = lambda: datetime.now(UTC) + timedelta(seconds=later)
    importing.put("day.csv", HEADER + _rows("d", 3, ts) + _rows("e", 1, ts), tmp_path)
    run_poll_pass(importing.deps)
    accepted = sorted(e["identifier"] for e in sandbox_server.admin.meter_events())
    assert accepted == ["e-0"]
