"""The calling thread's side of `StripeMeterEventSink.send_batches`: waiting for the batches
in flight on the pool (beating meanwhile), and settling the finished ones in order (what was
sent, what Stripe refused, and which failure the caller is told of)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait

from service.errors import MeterEventSendError, ServiceError

BatchSent = Callable[[int], None]
WAIT_CALL_EVERY = 5.0  # seconds between `send_batches`' on_wait calls while batches back off


def wait_for_batches(
    pending: dict[Future[int], int], until: str, on_wait: Callable[[], None] | None
) -> set[Future[int]]:
    """The finished futures once one (FIRST_COMPLETED) or all (ALL_COMPLETED) of `pending`
    finished, calling `on_wait()` every WAIT_CALL_EVERY seconds until then."""
    if on_wait is None:
        return wait(pending, return_when=until).done
    while True:
        done, left = wait(pending, timeout=WAIT_CALL_EVERY, return_when=until)
        if (done and until == FIRST_COMPLETED) or not left:
            return done
        on_wait()


def settle_batches(
    done: set[Future[int]],
    pending: dict[Future[int], int],
    callbacks: tuple[BatchSent | None, BatchSent | None],
    failure: ServiceError | None,
) -> tuple[int, ServiceError | None]:
    """Events sent by the finished futures (removed from `pending`), and the first failure;
    `callbacks` are (on_sent, on_refused). Stripe's failure of a batch (a MeterEventSendError)
    comes before what `before_send` raised of another, in whichever order they came: the
    caller knows what it raised, not what Stripe answered (a batch given up through a lasting
    outage was lost behind one held at the poller's horizon, and alerted as that only)."""
    sent = 0
    on_sent, on_refused = callbacks
    for future in sorted(done, key=pending.__getitem__):
        index = pending.pop(future)
        error = future.exception()
        if error is None:
            sent += future.result()
            if on_sent is not None:
                on_sent(index)
            continue
        if not isinstance(error, Exception):
            raise error  # KeyboardInterrupt, SystemExit: stop at once
        if on_refused is not None and getattr(error, "permanent", False):
            on_refused(index)
        error = as_send_error(error)
        if failure is None or (
            isinstance(error, MeterEventSendError) and not isinstance(failure, MeterEventSendError)
        ):
            failure = error
    return sent, failure


def as_send_error(error: BaseException) -> ServiceError:
    """Our own errors as they are (a MeterEventSendError, or what `before_send` raised: the
    poller judges a `HorizonPassed` by its type); anything else as a failed request."""
    if isinstance(error, ServiceError):
        return error
    return MeterEventSendError(
        f"meter event stream request failed: {type(error).__name__}: {error}"
    )
