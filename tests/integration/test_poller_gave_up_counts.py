"""What the poller's give-up alert says of the batches Stripe acknowledged: every one of them,
as `meterfix poll --retry KEY` counts them, and what a retry sends. The sandbox over HTTP
through the real SDK, a file:// bucket, SQLite and PostgreSQL."""

# ruff: noqa: F811  (fixtures imported from the module that defines them)
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from service.adapters.stripe_client import build_stripe_client
from service.config import Settings
from service.models import Alert
from service.poller.passes import run_poll_pass
from tests.conftest import SandboxServer
from tests.integration.test_poller_incidents import _OneBatchFails
from tests.integration.test_poller_resume import (  # noqa: F401
    _object,
    _put,
    poller,
    settings,
)


def test_the_give_up_alert_counts_every_batch_acknowledged_and_says_what_a_retry_sends(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path, make_app: Any
) -> None:
    """Batch 3 of a 1,000-row file fails while batches 4-9 in flight beside it are
    acknowledged; 23.5 h later the pass gives up (horizon).

    Instead: the alert said "3 batches were acknowledged; a retry resumes after them" (the
    unbroken run from the first batch) while `poll --retry` said "9 batches acknowledged":
    an operator read 600 billed rows as at risk of going out again."""
    t0 = datetime.now(UTC) - timedelta(hours=23, minutes=30)
    stamp = int(datetime.now(UTC).timestamp()) - 60
    _put(
        settings, "k.csv", [f"k-{i},{stamp},api_requests,cus_A,1\n" for i in range(1000)], tmp_path
    )
    client = build_stripe_client(settings)
    sink = _OneBatchFails(client, settings, workers=2, base_delay=0.01, row="k-300", others=9)
    assert run_poll_pass(poller(sink, at=t0)).retry_files == 1
    assert run_poll_pass(poller()).gave_up == 1
    with Session(poller().engine) as session:
        [alert] = session.exec(select(Alert).where(Alert.kind == "poller.gave_up")).all()
    retry = make_app(settings).test_cli_runner().invoke(args=["poll", "--retry", "k.csv"])
    assert "9 batches acknowledged; a retry resumes at row 301" in retry.output, retry.output
    said = alert.message
    assert (
        "9 batches (3 from the first, 6 past one that was not) were acknowledged: a retry "
        "never sends them again; it resumes at row 301 and sends again only the 1 batch "
        "never acknowledged"
    ) in said, said
