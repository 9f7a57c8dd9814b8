"""MeterEventSink over Stripe's v2 meter event stream (the high-throughput path).

A meter event session (`POST /v2/billing/meter_event_session`, api host) yields a token that
lives until its `expires_at` (15 minutes); events go to `POST /v2/billing/meter_event_stream`
on the meter-events host with that token, at most 100 per request. The session is renewed a
little before `expires_at`, and at once when the stream answers 401: an expired session is
type `temporary_session_expired` (`stripe.TemporarySessionExpiredError`, which is not an
`AuthenticationError`), a token Stripe no longer knows is an `AuthenticationError`.

Transient failures (5xx, 409, 429, timeouts, dropped connections) are retried here, with
exponential backoff and full jitter, honouring `Retry-After`. A request not answered in full
within `call_seconds` (stripe_client.CALL_SECONDS) fails as a dropped connection and is
retried as one: an answer dripping a byte at a time never trips the read timeout, and hung the
poller's pass without end. Only a failure that outlasts
`max_attempts` raises `MeterEventSendError`, carrying the last `Retry-After` (one longer than
`MAX_RETRY_AFTER` raises at once): the poller tries the object again no sooner. A 400 names
the request itself (the file's rows): it is raised at once, marked `permanent`. Re-sending a
batch is safe only while Stripe still dedupes its identifiers (at least 24 hours from their
first send): a batch whose answer was lost then bills nothing twice. So `send_batches(...,
before_send=)` asks the caller before every request of a batch, its retries included (its
backoffs take minutes through an incident): the poller refuses one past its re-send horizon.

`send_batches(..., stopping=)`: once `stopping()` holds (the worker got SIGTERM), a batch
backing off raises `SendStopped` within STOP_CHECK_EVERY instead of waiting its backoff out,
and a batch not yet sent is not sent: it stays unacknowledged, resumed by the next start under
the same identifiers. (A stop was seen only once a batch in flight finished: through a Stripe
outage, minutes of retries, and the supervisor killed the worker.)
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor
from functools import partial
from typing import Any, cast

import stripe

from service.adapters.meter_event_answers import (
    is_transient,
    retry_after_seconds,
    send_error,
    session_lifetime,
)
from service.adapters.meter_event_batches import BatchSent, settle_batches, wait_for_batches
from service.adapters.stripe_client import deadline_http_client
from service.config import Settings
from service.errors import MeterEventSendError, ServiceError
from service.logs import log_event

MAX_EVENTS_PER_REQUEST = 100
SESSION_MARGIN = 60.0  # renew this long before `expires_at` (a fifth of shorter lifetimes)
MAX_RENEWALS = 2  # per request: a fresh session rejected again is not an expiry
MAX_RETRY_AFTER = 60.0  # a longer Retry-After fails the request; the poller waits it out
DEFAULT_WORKERS = 8
DEFAULT_TIMEOUT = 30.0  # seconds a read of a stream request waits (the SDK's own default: 80)
STOP_CHECK_EVERY = 0.1  # seconds between checks for a stop while a batch backs off
_SESSION_ERRORS = (stripe.TemporarySessionExpiredError, stripe.AuthenticationError)

# the `stopping` of the `send_batches` call a pool thread works for (set by the pool's
# initializer), and its `before_send` bound to the batch the thread sends (`_send_indexed`):
# `send_batch`, which tests override, keeps its one argument
_call = threading.local()


class SendStopped(MeterEventSendError):
    """The process is stopping: a batch was left unsent, or its backoff cut short (it stays
    unacknowledged; Stripe may or may not have taken an earlier attempt of it)."""


def _bind_stopping(stopping: Callable[[], bool] | None) -> None:
    _call.stopping = stopping


class StripeMeterEventSink:
    def __init__(
        self,
        client: stripe.StripeClient,
        settings: Settings,
        *,
        workers: int = DEFAULT_WORKERS,
        max_attempts: int = 8,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        timeout: float = DEFAULT_TIMEOUT,
        call_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._bases = {
            "api": settings.stripe_api_base,
            "meter_events": settings.stripe_meter_events_base,
        }
        self._workers = max(1, workers)
        self._max_attempts = max(1, max_attempts)
        self._base_delay, self._max_delay = base_delay, max_delay
        self._http = deadline_http_client(call_seconds, read_seconds=timeout)
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._stream: stripe.StripeClient | None = None
        self._renew_at = 0.0
        self.sessions_created = 0

    def send(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Send any number of events, 100 per request, concurrently; raise on the first failure."""
        batches = [
            events[i : i + MAX_EVENTS_PER_REQUEST]
            for i in range(0, len(events), MAX_EVENTS_PER_REQUEST)
        ]
        self.send_batches(batches)

    def send_batches(
        self,
        batches: Iterable[Sequence[Mapping[str, Any]]],
        on_sent: BatchSent | None = None,
        on_refused: BatchSent | None = None,
        on_wait: Callable[[], None] | None = None,
        stopping: Callable[[], bool] | None = None,
        before_send: BatchSent | None = None,
    ) -> int:
        """Send batches (each ≤ 100 events) on a small thread pool; the number of events sent.

        `on_sent(i)` is called, in this thread, for each batch (its index in `batches`) that
        Stripe accepted, so the caller can record what was acknowledged even when another
        batch fails; `on_refused(i)` for each batch Stripe refused (HTTP 400: nothing of it
        was taken). At most `2 * workers` batches are in flight, so memory stays bounded
        however long `batches` is, and a batch waiting out a backoff does not hold up the
        others. No batch is taken from `batches` after a failure: every batch taken went out
        (the caller knows the ones after it never did). Raises the first MeterEventSendError
        (else what iterating `batches` raised; else what `before_send` raised) after in-flight
        batches settle: a ServiceError raised iterating `batches` gives way to Stripe's
        failure of a batch in flight (the poller's horizon stop hid a lasting outage from its
        alert); anything else it raised (the poller's LockLost) is raised as it is. `on_wait()` is
        called, in this thread, every WAIT_CALL_EVERY seconds this thread waits for batches
        (backing off through a Stripe incident: minutes), so that the caller beats. Once
        `stopping()` holds, batches backing off or not yet sent raise `SendStopped` (module
        docstring). `before_send(i)` is called, in the pool thread, before every request of
        batch `i` (the first and each retry): what it raises leaves the batch unsent and is
        raised as it is (the poller's `HorizonPassed`)."""
        sent = 0
        settled = (on_sent, on_refused)
        with ThreadPoolExecutor(
            self._workers,
            thread_name_prefix="meter-events",
            initializer=_bind_stopping,
            initargs=(stopping,),
        ) as pool:
            pending: dict[Future[int], int] = {}
            failure: ServiceError | None = None
            taken: ServiceError | None = None  # what iterating `batches` raised
            try:
                taking, index = iter(batches), 0
                while failure is None:
                    try:
                        batch = next(taking)
                    except StopIteration:
                        break
                    except ServiceError as exc:  # raised once those in flight settle
                        taken = exc
                        break
                    submitted = pool.submit(self._send_indexed, batch, index, before_send)
                    pending[submitted] = index
                    index += 1
                    if len(pending) >= 2 * self._workers:
                        done = wait_for_batches(pending, FIRST_COMPLETED, on_wait)
                        count, failure = settle_batches(done, pending, settled, failure)
                        sent += count
            finally:
                done = wait_for_batches(pending, ALL_COMPLETED, on_wait)
                count, failure = settle_batches(done, pending, settled, failure)
                sent += count
        if taken is not None and not isinstance(failure, MeterEventSendError):
            raise taken
        if failure is not None:
            raise failure
        return sent

    def _send_indexed(
        self, batch: Sequence[Mapping[str, Any]], index: int, before_send: BatchSent | None
    ) -> int:
        """`send_batch` in a pool thread, with `before_send` bound to the batch's index."""
        _call.before_send = None if before_send is None else partial(before_send, index)
        return self.send_batch(batch)

    def send_batch(self, batch: Sequence[Mapping[str, Any]]) -> int:
        """One stream request (≤ 100 events), retried while the failure is transient; each
        try asks `before_send` first (`send_batches`)."""
        if len(batch) > MAX_EVENTS_PER_REQUEST:
            raise ValueError(f"at most {MAX_EVENTS_PER_REQUEST} events per request")
        if not batch:
            return 0
        body = cast(Any, {"events": [dict(event) for event in batch]})
        attempt = renewals = 0
        while True:
            _check_stop("not sent")
            if (before_send := getattr(_call, "before_send", None)) is not None:
                before_send()  # raises when the batch may no longer be sent
            stream = self._stream_client()
            try:
                stream.v2.billing.meter_event_stream.create(body)
                return len(batch)
            except _SESSION_ERRORS as exc:
                renewals += 1
                if renewals > MAX_RENEWALS:
                    raise send_error(exc, "meter event session rejected after renewal") from exc
                self._renew_session(stale=stream)
            except stripe.StripeError as exc:
                attempt += 1
                self._retry_or_raise(exc, attempt, "meter event stream request failed")

    def _retry_or_raise(
        self, exc: stripe.StripeError, attempt: int, what: str, *, about_rows: bool = True
    ) -> None:
        """Sleep before the next attempt, or raise when the failure is not transient or
        outlasted `max_attempts`. A 400 is permanent when the request carried the rows."""
        if not is_transient(exc):
            permanent = about_rows and exc.http_status == 400
            raise send_error(exc, what, permanent=permanent) from exc
        delay = self._delay(attempt, exc)
        if attempt >= self._max_attempts or delay is None:
            if isinstance(exc, stripe.RateLimitError):
                what = "still rate limited"
            raise send_error(exc, f"{what} after {attempt} attempts", retry_after=True) from exc
        log_event(
            "stripe.meter_events_retry",
            attempt=attempt,
            delay=round(delay, 3),
            status=exc.http_status,
            error=type(exc).__name__,
        )
        self._back_off(delay)

    def _back_off(self, delay: float) -> None:
        """Sleep `delay` seconds, cut short by a stop (`send_batches`' `stopping`)."""
        if getattr(_call, "stopping", None) is None:
            self._sleep(delay)
            return
        until = self._clock() + delay
        while (left := until - self._clock()) > 0:
            _check_stop("its retries cut short")
            self._sleep(min(STOP_CHECK_EVERY, left))

    def _delay(self, attempt: int, exc: stripe.StripeError) -> float | None:
        """`Retry-After` when Stripe sent one (None when it asks for longer than we wait in a
        pass), otherwise exponential backoff with full jitter over [cap/2, cap]."""
        retry_after = retry_after_seconds(exc)
        if retry_after is not None:
            if retry_after > MAX_RETRY_AFTER:
                return None
            return retry_after + random.uniform(0, self._base_delay)
        cap = min(self._max_delay, self._base_delay * 2 ** (attempt - 1))
        return random.uniform(cap / 2, cap)

    def _stream_client(self) -> stripe.StripeClient:
        with self._lock:
            if self._stream is None or self._clock() >= self._renew_at:
                self._open_session()
            assert self._stream is not None
            return self._stream

    def _renew_session(self, stale: stripe.StripeClient) -> None:
        """Renew unless another thread already replaced the rejected session."""
        with self._lock:
            if self._stream is stale or self._stream is None:
                self._open_session()

    def _open_session(self) -> None:
        attempt = 0
        while True:
            try:
                session = self._client.v2.billing.meter_event_session.create()
                break
            except stripe.StripeError as exc:
                attempt += 1
                what = "could not create a meter event session"
                self._retry_or_raise(exc, attempt, what, about_rows=False)
        self._stream = stripe.StripeClient(
            session.authentication_token,
            base_addresses={"api": self._bases["api"], "meter_events": self._bases["meter_events"]},
            max_network_retries=0,  # retried in send_batch, with Retry-After and a session renewal
            http_client=self._http,
        )
        lifetime = session_lifetime(session.created, session.expires_at)
        self._renew_at = self._clock() + lifetime - min(SESSION_MARGIN, lifetime / 5)
        self.sessions_created += 1
        log_event("stripe.meter_event_session", session_id=session.id, lifetime=round(lifetime))


def _check_stop(what: str) -> None:
    """Raise SendStopped when the `send_batches` call this thread works for is stopping."""
    stopping: Callable[[], bool] | None = getattr(_call, "stopping", None)
    if stopping is not None and stopping():
        raise SendStopped(f"the process is stopping: a batch left unacknowledged ({what})")
