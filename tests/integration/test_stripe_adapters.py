"""Stripe adapters through the real `stripe` SDK (and requests) against the bundled sandbox."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.adapters.customers import StripeCustomerDirectory
from service.adapters.meter_events import StripeMeterEventSink
from service.adapters.stripe_client import build_stripe_client
from service.adapters.stripe_files import StripeFileStore
from service.adapters.stripe_meters import StripeMeterSource
from service.config import Settings
from service.errors import MeterEventSendError, StripeFileError
from tests.conftest import SandboxServer


@pytest.fixture
def settings(sandbox_server: SandboxServer, make_settings: Callable[..., Settings]) -> Settings:
    bases = sandbox_server.bases  # each Stripe host on its own URL, as at Stripe
    return make_settings(
        stripe_api_key=sandbox_server.api_key,
        stripe_api_base=bases["api"],
        stripe_files_base=bases["files"],
        stripe_meter_events_base=bases["meter_events"],
    )


def _events(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "event_name": "api_requests",
            "identifier": f"evt-{i}",
            "payload": {"stripe_customer_id": "cus_A", "value": str(i + 1)},
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        for i in range(start, start + count)
    ]


def test_meters_listed_across_pages_and_cached(
    sandbox_server: SandboxServer, settings: Settings
) -> None:
    for i in range(105):  # > one page of 100
        sandbox_server.admin.create_meter(f"meter_{i:03d}", value_key="tokens")
    clock = [0.0]
    source = StripeMeterSource(
        build_stripe_client(settings), ttl_seconds=60, clock=lambda: clock[0]
    )
    meters = source.meters()
    assert len(meters) == 105
    assert {m.event_name for m in meters} == {f"meter_{i:03d}" for i in range(105)}
    assert all(m.value_key == "tokens" and m.id.startswith("mtr_") for m in meters)
    sandbox_server.admin.create_meter("late_meter")
    assert len(source.meters()) == 105  # cached
    clock[0] = 61.0
    assert len(source.meters()) == 106  # TTL ran out
    sandbox_server.admin.create_meter("later_meter")
    assert len(source.refresh()) == 107


def test_file_download_streams_to_dest_and_metadata(
    sandbox_server: SandboxServer, settings: Settings, tmp_path: Path
) -> None:
    content = b"identifier,error_code\n" + b"id-1,no_meter\n" * 200_000  # ~3 MB, many chunks
    file_id = sandbox_server.admin.upload_file(content, filename="failed.csv")["id"]
    store = StripeFileStore(
        build_stripe_client(settings), settings.stripe_files_base, settings.stripe_api_key
    )
    dest = tmp_path / "dl" / "failed.csv"
    store.download_file(file_id, dest)
    assert dest.read_bytes() == content
    assert [p.name for p in dest.parent.iterdir()] == ["failed.csv"]  # no temp leftovers
    meta = store.file_metadata(file_id)
    assert meta["id"] == file_id and meta["size"] == len(content)
    with pytest.raises(StripeFileError, match="404") as info:
        store.download_file("file_missing", tmp_path / "x.csv")
    assert info.value.status == 404
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(StripeFileError, match="not a Stripe file id"):
        store.download_file("../../v1/customers", tmp_path / "y.csv")


def test_file_download_uses_the_configured_key(
    sandbox_server: SandboxServer, settings: Settings, tmp_path: Path
) -> None:
    file_id = sandbox_server.admin.upload_file(b"a\n")["id"]
    store = StripeFileStore(build_stripe_client(settings), settings.stripe_files_base, "sk_bad")
    with pytest.raises(StripeFileError, match="401"):
        store.download_file(file_id, tmp_path / "a.csv")


def test_customers_exist_and_search(sandbox_server: SandboxServer, settings: Settings) -> None:
    sandbox_server.admin.create_customer("cus_known", metadata={"external_id": "acme-42"})
    sandbox_server.admin.create_customer("cus_other", metadata={"external_id": "beta"})
    directory = StripeCustomerDirectory(build_stripe_client(settings))
    assert directory.exists("cus_known") is True
    assert directory.exists("cus_nope") is False
    assert directory.exists("  ") is False
    assert directory.search_by_metadata("external_id", "acme-42") == ["cus_known"]
    assert directory.search_by_metadata("external_id", "none") == []


def test_meter_events_stream_in_batches_of_100(
    sandbox_server: SandboxServer, settings: Settings
) -> None:
    sandbox_server.admin.create_meter("api_requests")
    sink = StripeMeterEventSink(build_stripe_client(settings), settings, workers=3)
    sink.send(_events(250))
    accepted = sandbox_server.admin.meter_events()
    assert sorted(e["identifier"] for e in accepted) == sorted(f"evt-{i}" for i in range(250))
    streams = [r for r in sandbox_server.admin.requests() if "meter_event_stream" in r["path"]]
    assert len(streams) == 3  # 100 + 100 + 50
    assert sink.sessions_created == 1
    sink.send(_events(10))  # re-send: Stripe dedupes identifiers
    assert len(sandbox_server.admin.meter_events()) == 250


def test_meter_events_renew_session_on_401_and_after_14_minutes(
    sandbox_server: SandboxServer, settings: Settings
) -> None:
    sandbox_server.admin.create_meter("api_requests")
    clock = [0.0]
    sink = StripeMeterEventSink(build_stripe_client(settings), settings, clock=lambda: clock[0])
    sink.send(_events(5))
    with sandbox_server.sandbox.state.lock:  # the sandbox forgets (expires) every token
        sandbox_server.sandbox.state.sessions.clear()
    sink.send(_events(5, start=5))
    assert sink.sessions_created == 2
    clock[0] = 14 * 60 + 1
    sink.send(_events(5, start=10))
    assert sink.sessions_created == 3
    assert len(sandbox_server.admin.meter_events()) == 15


def test_meter_events_back_off_on_429_and_raise_on_other_errors(
    sandbox_server: SandboxServer, settings: Settings
) -> None:
    sandbox_server.admin.create_meter("api_requests")
    delays: list[float] = []
    sink = StripeMeterEventSink(
        build_stripe_client(settings), settings, sleep=delays.append, max_attempts=4
    )
    sandbox_server.admin.inject_fault("POST", "/v2/billing/meter_event_stream", 429, count=2)
    sink.send(_events(3))
    assert len(delays) == 2 and all(0 <= d <= 20 for d in delays)
    assert len(sandbox_server.admin.meter_events()) == 3
    sandbox_server.admin.inject_fault("POST", "/v2/billing/meter_event_stream", 429, count=9)
    with pytest.raises(MeterEventSendError, match="rate limited after 4 attempts"):
        sink.send(_events(1, start=50))
    sandbox_server.admin.reset()
    sandbox_server.admin.create_meter("api_requests")
    sandbox_server.admin.inject_fault("POST", "/v2/billing/meter_event_stream", 400, count=1)
    with pytest.raises(MeterEventSendError, match="HTTP 400") as info:
        sink.send(_events(1, start=60))
    assert info.value.status == 400
