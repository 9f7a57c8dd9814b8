"""Rows the bundled poller must neither lose nor bill twice when an import stops part-way:
Stripe refuses a request, the object changes under the poller, a byte cannot be read. The
sandbox over HTTP through the real SDK, a file:// bucket, SQLite and PostgreSQL."""

# ruff: noqa: F811  (fixtures imported from the module that defines them)
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from service.adapters.meter_events import StripeMeterEventSink
from service.adapters.stripe_client import build_stripe_client
from service.config import Settings
from service.models import PollerBatch
from service.poller.passes import run_poll_pass
from tests.conftest import SandboxServer
from tests.integration.test_poller_resume import (  # noqa: F401
    STREAM,
    _object,
    _put,
    poller,
    settings,
)


def _one_worker(settings: Settings) -> StripeMeterEventSink:
    """One request at a time (two in flight): which batches go out before a refusal is known."""
    return StripeMeterEventSink(build_stripe_client(settings), settings, workers=1, base_delay=0.01)


def _accepted(server: SandboxServer) -> list[str]:
    return sorted(e["identifier"] for e in server.admin.meter_events())


def test_batches_a_refusal_kept_from_going_out_are_sent_from_the_fixed_file_a_day_later(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """Stripe refuses the first request (HTTP 400): the poller gives up on the file at once.
    The batches recorded with it that never went out (and the refused one) were never billed,
    so the fixed file uploaded a day later sends them: none is left out as "sent by another
    version" once the 23 h horizon has passed."""
    day_ago = datetime.now(UTC) - timedelta(hours=24)
    stamp = int(day_ago.timestamp()) - 60
    rows = [f"u-{i},{stamp},api_requests,cus_A,{i + 1}\n" for i in range(450)]
    _put(settings, "usage.csv", rows, tmp_path)
    sandbox_server.admin.inject_fault("POST", STREAM, 400, count=1)
    first = run_poll_pass(poller(_one_worker(settings), at=day_ago))
    assert (first.retry_files, first.gave_up) == (1, 1)
    billed = set(_accepted(sandbox_server))
    assert len(billed) < 450  # the refused batch at least, and the ones never sent
    with Session(poller().engine) as session:
        recorded = session.exec(select(PollerBatch)).all()
    # only batches that went out (and were not refused) stay recorded as sent
    assert len(recorded) == len(billed) // 100
    assert all(b.acked_at is not None for b in recorded)
    _put(settings, "usage-fixed.csv", rows, tmp_path)
    second = run_poll_pass(poller(_one_worker(settings)))
    assert (second.imported, second.rows, second.sent) == (1, 450, 450)
    assert second.left_out == len(billed)
    assert _accepted(sandbox_server) == sorted(f"u-{i}" for i in range(450))
    assert not sandbox_server.admin.duplicates()
    assert _object(poller(), "usage-fixed.csv").status == "imported"
