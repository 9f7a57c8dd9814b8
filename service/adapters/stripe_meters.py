"""MeterSource over Stripe: every meter (active and inactive), cached for a short while."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import stripe

from remediation.meters import Meter
from service.logs import log_event

DEFAULT_TTL_SECONDS = 300.0


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
    ) -> None:
        self._client = client
        self._ttl = ttl_seconds
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
        pages = self._client.v1.billing.meters.list({"limit": 100}).auto_paging_iter()
        meters = tuple(Meter.from_stripe(obj.to_dict()) for obj in pages)
        log_event("stripe.meters_fetched", count=len(meters))
        return meters
