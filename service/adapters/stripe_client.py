"""One way to build a StripeClient: configured hosts only, never a URL taken from a payload.

Every request it makes has a deadline in all (CALL_SECONDS), on top of the SDK's timeout per
read: an answer dripping a byte at a time (a slow Stripe, a proxy) never trips a read timeout,
and a poller pass or a task waited on it without end. At the deadline the thread's
connections of that client are shut down (`CallDeadline`) and the request fails as a dropped
connection does (`stripe.APIConnectionError`, retried as a timeout is: by the SDK, then by
the caller)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import stripe

from service.adapters.call_deadline import CallDeadline
from service.config import Settings

# One request to Stripe in all, from its connection to its last byte (its answers take well
# under a second), each try of a call alike: a call the SDK tries 3 times (`poll`, the other
# commands; the worker twice, the embedded sandbox once) ends within 3 minutes. A listing of
# many pages is bounded in all by its caller (`stripe_meters.LIST_SECONDS`).
CALL_SECONDS = 60.0
READ_SECONDS = 80.0  # one read waiting for its next byte (the SDK's default)
# Path parts named in a deadline's reason; any other (an id, a customer text) is `…`.
_NAMED = {"v1", "v2", "billing", "meters", "meter_event_session", "meter_event_stream"}
_NAMED |= {"customers", "search", "files", "contents", "events"}


class DeadlineRequestsClient(stripe.RequestsClient):
    """The SDK's requests client, each request bounded by `call_seconds` in all. Its
    sessions are one a thread (the SDK's), so the sockets a thread's session opened, listed
    here a thread, are the only ones a late request of that thread may be reading from."""

    def __init__(self, *, call_seconds: float, timeout: float = READ_SECONDS) -> None:
        super().__init__(timeout=timeout)
        self.call_seconds = call_seconds

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,  # the base class's; the requests client takes none
    ) -> tuple[Any, int, Mapping[str, str]]:
        deadline = CallDeadline(
            self.call_seconds, f"{method.upper()} {_named(url)}", self._sockets()
        )
        try:
            with deadline.watching():
                return super().request(method, url, headers, post_data)
        except TimeoutError as exc:  # `watching`: the deadline passed
            raise _connection_error(str(exc), should_retry=True) from exc
        finally:
            deadline.cancel()

    def _sockets(self) -> list[socket.socket]:
        sockets: list[socket.socket] | None = getattr(self._thread_local, "mfx_sockets", None)
        if sockets is None:
            sockets = self._thread_local.mfx_sockets = []
        sockets[:] = [sock for sock in sockets if sock.fileno() != -1]  # closed ones gone
        return sockets


# The SDK's error, typed (its constructor is not): what a dropped connection raises.
_connection_error: Callable[..., stripe.APIConnectionError] = stripe.APIConnectionError


def _named(url: str) -> str:
    """The request's path from its API version on (a base's own path left out), as a reason
    may say it: ids and texts (customer data) are `…`."""
    parts = urlsplit(url).path.split("/")
    start = next((n for n, p in enumerate(parts) if p in ("v1", "v2")), len(parts))
    return "/" + "/".join(p if p in _NAMED else "…" for p in parts[start:])


def build_stripe_client(
    settings: Settings, *, max_network_retries: int = 2, call_seconds: float | None = None
) -> stripe.StripeClient:
    """`call_seconds`: each request's deadline in all (default CALL_SECONDS)."""
    stripe.enable_telemetry = False
    return stripe.StripeClient(
        settings.stripe_api_key,
        base_addresses={
            "api": settings.stripe_api_base,
            "files": settings.stripe_files_base,
            "meter_events": settings.stripe_meter_events_base,
        },
        max_network_retries=max_network_retries,
        http_client=deadline_http_client(call_seconds),
    )


def deadline_http_client(
    call_seconds: float | None = None, read_seconds: float = READ_SECONDS
) -> DeadlineRequestsClient:
    """An HTTP client for a StripeClient: `read_seconds` a read, `call_seconds` (default
    CALL_SECONDS, read now: tests lower it) a request in all."""
    seconds = CALL_SECONDS if call_seconds is None else call_seconds
    return DeadlineRequestsClient(call_seconds=seconds, timeout=read_seconds)
