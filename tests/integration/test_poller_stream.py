"""The meter event stream sink against the sandbox over HTTP, through the real SDK: transient
failures retried inside the call (5xx, 429 with Retry-After, timeouts, dropped connections,
answers lost after Stripe accepted), permanent ones raised at once, and the session renewed
when it expires (Stripe's `temporary_session_expired`) and ahead of its `expires_at`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from service.adapters.meter_events import StripeMeterEventSink
from service.adapters.stripe_client import build_stripe_client
from service.config import Settings
from service.errors import MeterEventSendError
from tests.conftest import SandboxServer

STREAM = "/v2/billing/meter_event_stream"


@pytest.fixture
def settings(sandbox_server: SandboxServer, make_settings: Callable[..., Settings]) -> Settings:
    sandbox_server.admin.create_meter("api_requests")
    return make_settings(
        stripe_api_key=sandbox_server.api_key,
        stripe_api_base=sandbox_server.bases["api"],
        stripe_files_base=sandbox_server.bases["files"],
        stripe_meter_events_base=sandbox_server.bases["meter_events"],
    )


def _events(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "event_name": "api_requests",
            "identifier": f"s-{i}",
            "payload": {"stripe_customer_id": "cus_A", "value": "1"},
        }
        for i in range(start, start + count)
    ]


def _sink(settings: Settings, delays: list[float], **options: Any) -> StripeMeterEventSink:
    client = build_stripe_client(settings)
    return StripeMeterEventSink(client, settings, sleep=delays.append, **options)


def _stream_requests(server: SandboxServer) -> int:
    return sum(1 for r in server.admin.requests() if r["path"] == STREAM)


def test_5xx_lost_answers_and_dropped_connections_are_retried_in_the_call(
    sandbox_server: SandboxServer, settings: Settings
) -> None:
    delays: list[float] = []
    sink = _sink(settings, delays)
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=1)
    sandbox_server.admin.inject_fault("POST", STREAM, 503, count=1, after=True)  # accepted
    sandbox_server.admin.inject_fault("POST", STREAM, 0, count=1)  # connection dropped
    sink.send(_events(3))
    assert len(delays) == 3 and all(0.25 <= d <= 2.0 for d in delays)  # 0.5 s doubling
    assert [e["identifier"] for e in sandbox_server.admin.meter_events()] == [
        "s-0",
        "s-1",
        "s-2",
    ]
    assert len(sandbox_server.admin.duplicates()) == 3  # the lost answer's batch, deduped


def test_429_waits_what_retry_after_says(sandbox_server: SandboxServer, settings: Settings) -> None:
    delays: list[float] = []
    sink = _sink(settings, delays)
    sandbox_server.admin.inject_fault("POST", STREAM, 429, count=2, retry_after=3)
    sink.send(_events(2))
    assert len(delays) == 2 and all(3 <= d <= 3.5 for d in delays)
    sandbox_server.admin.inject_fault("POST", STREAM, 429, count=1, retry_after=3600)
    with pytest.raises(MeterEventSendError, match="rate limited after 1 attempts") as info:
        sink.send(_events(1, start=10))  # longer than a pass waits: the poller backs off
    assert not info.value.permanent
    assert len(sandbox_server.admin.meter_events()) == 2


def test_a_timeout_is_retried(sandbox_server: SandboxServer, settings: Settings) -> None:
    delays: list[float] = []
    sink = _sink(settings, delays, timeout=0.3)
    sandbox_server.admin.inject_fault("POST", STREAM, 500, count=1, delay=1.0)
    sink.send(_events(2))
    assert len(delays) == 1
    assert len(sandbox_server.admin.meter_events()) == 2


def test_failures_that_outlast_the_retries_raise_and_400_is_permanent(
    sandbox_server: SandboxServer, settings: Settings
) -> None:
    delays: list[float] = []
    sink = _sink(settings, delays, max_attempts=3)
    sandbox_server.admin.inject_fault("POST", STREAM, 502, count=3)
    with pytest.raises(MeterEventSendError, match="after 3 attempts: HTTP 502") as info:
        sink.send(_events(1))
    assert not info.value.permanent and len(delays) == 2
    sandbox_server.admin.inject_fault("POST", STREAM, 400, count=1)
    with pytest.raises(MeterEventSendError, match="HTTP 400") as refused:
        sink.send(_events(1))
    assert refused.value.permanent and len(delays) == 2  # not retried


def test_an_expired_session_is_renewed(sandbox_server: SandboxServer, settings: Settings) -> None:
    """The sandbox answers an expired token as Stripe does (401 temporary_session_expired:
    stripe.TemporarySessionExpiredError, not an AuthenticationError)."""
    sandbox_server.admin.configure(meter_event_session_seconds=0.5)
    frozen = _sink(settings, [], clock=lambda: 0.0)  # never renews ahead of expires_at
    frozen.send(_events(2))
    time.sleep(0.6)
    frozen.send(_events(2, start=2))
    assert frozen.sessions_created == 2
    assert len(sandbox_server.admin.meter_events()) == 4
    assert _stream_requests(sandbox_server) == 3  # the rejected request, then the retry


def test_the_session_is_renewed_ahead_of_expires_at(
    sandbox_server: SandboxServer, settings: Settings
) -> None:
    sandbox_server.admin.configure(meter_event_session_seconds=1.0)
    sink = _sink(settings, [])
    sink.send(_events(2))
    time.sleep(0.85)  # past expires_at minus a fifth of the lifetime
    sink.send(_events(2, start=2))
    assert sink.sessions_created == 2
    assert _stream_requests(sandbox_server) == 2  # no request was rejected
    assert len(sandbox_server.admin.meter_events()) == 4
