"""MeterEventSink over Stripe's v2 meter event stream (the high-throughput path).

A meter event session (`POST /v2/billing/meter_event_session`, api host) yields a token
valid for 15 minutes; events go to `POST /v2/billing/meter_event_stream` on the meter-events
host with that token, at most 100 per request. The session is renewed at 14 minutes or on a
401. A 429 backs off exponentially with full jitter; any other error raises
`MeterEventSendError`. Re-sending a batch is safe: Stripe dedupes identifiers for at least
24 hours, so a batch that failed half way (or a crash after sending) bills nothing twice.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import stripe

from service.config import Settings
from service.logs import log_event

MAX_EVENTS_PER_REQUEST = 100
SESSION_RENEW_SECONDS = 14 * 60
DEFAULT_WORKERS = 4


class MeterEventSendError(Exception):
    """A batch of meter events was not accepted; `reason` says why in one line."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class StripeMeterEventSink:
    def __init__(
        self,
        client: stripe.StripeClient,
        settings: Settings,
        *,
        workers: int = DEFAULT_WORKERS,
        max_attempts: int = 6,
        base_delay: float = 0.25,
        max_delay: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._bases = {
            "api": settings.stripe_api_base,
            "meter_events": settings.stripe_meter_events_base,
        }
        self._workers = max(1, workers)
        self._max_attempts = max_attempts
        self._base_delay, self._max_delay = base_delay, max_delay
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._stream: stripe.StripeClient | None = None
        self._session_started = 0.0
        self.sessions_created = 0

    def send(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Send any number of events, 100 per request, concurrently; raise on the first failure."""
        batches = [
            events[i : i + MAX_EVENTS_PER_REQUEST]
            for i in range(0, len(events), MAX_EVENTS_PER_REQUEST)
        ]
        self.send_batches(batches)

    def send_batches(self, batches: Iterable[Sequence[Mapping[str, Any]]]) -> int:
        """Send batches (each ≤ 100 events) on a small thread pool; the number of events sent.

        At most `2 * workers` batches are in flight, so memory stays bounded however long
        `batches` is. Raises the first MeterEventSendError after in-flight batches settle."""
        sent = 0
        with ThreadPoolExecutor(self._workers, thread_name_prefix="meter-events") as pool:
            pending: set[Future[int]] = set()
            for batch in batches:
                pending.add(pool.submit(self.send_batch, batch))
                if len(pending) >= 2 * self._workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    sent += _collect(done)
            done, _ = wait(pending)
            sent += _collect(done)
        return sent

    def send_batch(self, batch: Sequence[Mapping[str, Any]]) -> int:
        """One stream request (≤ 100 events), with 429 backoff and one session renewal on 401."""
        if len(batch) > MAX_EVENTS_PER_REQUEST:
            raise ValueError(f"at most {MAX_EVENTS_PER_REQUEST} events per request")
        if not batch:
            return 0
        body = {"events": [dict(event) for event in batch]}
        renewed = False
        for attempt in range(1, self._max_attempts + 1):
            try:
                self._stream_client().v2.billing.meter_event_stream.create(body)  # type: ignore[arg-type]
                return len(batch)
            except stripe.AuthenticationError as exc:
                if renewed:
                    raise _send_error(exc, "meter event session rejected twice") from exc
                renewed = True
                self._renew_session()
            except stripe.RateLimitError as exc:
                if attempt == self._max_attempts:
                    raise _send_error(exc, f"still rate limited after {attempt} attempts") from exc
                self._backoff(attempt)
            except stripe.StripeError as exc:
                raise _send_error(exc, "meter event stream request failed") from exc
        raise MeterEventSendError("meter event session could not be renewed")

    def _backoff(self, attempt: int) -> None:
        delay = random.uniform(0, min(self._max_delay, self._base_delay * 2**attempt))
        log_event("stripe.meter_events_backoff", attempt=attempt, delay=round(delay, 3))
        self._sleep(delay)

    def _stream_client(self) -> stripe.StripeClient:
        with self._lock:
            stale = self._clock() - self._session_started >= SESSION_RENEW_SECONDS
            if self._stream is None or stale:
                self._open_session()
            assert self._stream is not None
            return self._stream

    def _renew_session(self) -> None:
        with self._lock:
            self._open_session()

    def _open_session(self) -> None:
        try:
            session = self._client.v2.billing.meter_event_session.create()
        except stripe.StripeError as exc:
            raise _send_error(exc, "could not create a meter event session") from exc
        self._stream = stripe.StripeClient(
            session.authentication_token,
            base_addresses={"api": self._bases["api"], "meter_events": self._bases["meter_events"]},
            max_network_retries=0,  # 429s are backed off here; other errors surface at once
        )
        self._session_started = self._clock()
        self.sessions_created += 1
        log_event("stripe.meter_event_session", session_id=session.id)


def _collect(done: set[Future[int]]) -> int:
    return sum(future.result() for future in done)


def _send_error(exc: stripe.StripeError, what: str) -> MeterEventSendError:
    status = exc.http_status
    detail = exc.user_message or type(exc).__name__
    return MeterEventSendError(f"{what}: HTTP {status}: {detail}", status=status)
