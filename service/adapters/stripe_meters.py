"""MeterSource over Stripe: every meter (active and inactive), cached for a short while.

The listing ends within LIST_SECONDS in all, its pages together: each page's request has its
own deadline (`stripe_client.CALL_SECONDS`), but 200 meters and more are pages after pages,
read while the source's lock is held and a poller pass beats nothing, so an answer dripping
in held the pass past MFX_HEARTBEAT_SILENCE. Past it, the request under way is cut and the
listing fails as a dropped connection does (`stripe.APIConnectionError`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import stripe

from remediation.meters import Meter
from service.adapters.call_deadline import in_all
from service.adapters.stripe_client import CALL_SECONDS
from service.logs import log_event

DEFAULT_TTL_SECONDS = 300.0
# Every page of the meter list in all: within the default MFX_HEARTBEAT_SILENCE (300 s).
LIST_SECONDS = 3 * CALL_SECONDS


class StripeMeterSource:
    """`GET /v1/billing/meters` (auto-paginated) behind a TTL cache; `refresh()` forces a fetch.

    Meters change rarely (only their display name can change once configured), so a few
    minutes of staleness is harmless; a remediation that meets an unknown event name can call
    `refresh()` once before deciding it is `no_meter`."""

    def __init__(
        self,
        client: stripe.StripeClient,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        list_seconds: float = LIST_SECONDS,
    ) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._list_seconds = list_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[Meter, ...] | None = None
        self._fetched_at = 0.0

    def meters(self) -> Sequence[Meter]:
        with self._lock:
            if self._cached is None or self._clock() - self._fetched_at >= self._ttl:
                self._cached = self._fetch()
                self._fetched_at = self._clock()
            return self._cached

    def refresh(self) -> Sequence[Meter]:
        with self._lock:
            self._cached = None
        return self.meters()

    def _fetch(self) -> tuple[Meter, ...]:
        with in_all(self._list_seconds, "the meter list, every page"):
            pages = self._client.v1.billing.meters.list({"limit": 100}).auto_paging_iter()
            meters = tuple(Meter.from_stripe(obj.to_dict()) for obj in pages)
        log_event("stripe.meters_fetched", count=len(meters))
        return meters
