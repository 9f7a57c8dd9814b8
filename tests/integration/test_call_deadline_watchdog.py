"""Call deadlines (`service/adapters/call_deadline.py`): one watchdog thread a process for all
of them, a cancel that waits for a hang-up under way, a forked child's own watchdog, and the
meter list bounded in all, its pages together (`in_all`). Real sockets, a real HTTP server
answering Stripe's meter list, the real SDK through `build_stripe_client`."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import stripe

from service.adapters import stripe_client
from service.adapters.call_deadline import CallDeadline, in_all
from service.adapters.stripe_client import build_stripe_client
from service.adapters.stripe_meters import StripeMeterSource
from service.config import Settings


def _shut(peer: socket.socket) -> bool:
    """Whether the other end of `peer`'s pair was shut down (`peer` reads its end)."""
    peer.setblocking(False)
    try:
        return peer.recv(1) == b""
    except BlockingIOError:
        return False


def test_one_thread_watches_every_deadline() -> None:
    """A deadline started a timer thread of its own (200 calls at once: 200 threads; a busy
    CPU paid ~3 ms a request for them). One watchdog thread watches them all now."""
    before = threading.active_count()
    deadlines = [CallDeadline(30, f"call {n}", []) for n in range(200)]
    try:
        assert threading.active_count() - before <= 1
    finally:
        for deadline in deadlines:
            deadline.cancel()
    assert not any(d.passed for d in deadlines)


def test_a_deadline_hangs_up_its_sockets_and_a_cancelled_one_does_not() -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    with a, b, c, d:
        late = CallDeadline(0.05, "late", [a])
        kept = CallDeadline(0.05, "kept", [c])
        kept.cancel()
        time.sleep(0.3)
        assert late.passed and _shut(b)
        assert not kept.passed and not _shut(d)
        assert str(late.timeout()) == (
            "late: not done within 0.05 s (answering too slowly, or not at all)"
        )


class _SlowSockets(list[socket.socket]):
    """The sockets of a deadline whose hang-up, once begun, takes 0.3 s to reach them (a
    busy CPU): `begun` is set when it begins."""

    def __init__(self, *socks: socket.socket) -> None:
        super().__init__(socks)
        self.begun = threading.Event()

    def __iter__(self) -> Iterator[socket.socket]:
        self.begun.set()
        time.sleep(0.3)
        return super().__iter__()


def test_a_cancel_waits_for_a_hang_up_under_way() -> None:
    """A call ending just as its deadline passed: `cancel()` stopped a timer that had already
    begun its hang-up, which went on after the call returned and shut the pooled socket the
    thread's next call was reading from (failing it as a dropped connection). `cancel()`
    returns once the hang-up under way is done: no socket is shut after it."""
    a, b = socket.socketpair()
    with a, b:
        sockets = _SlowSockets(a)
        deadline = CallDeadline(0.05, "ending", sockets)
        assert sockets.begun.wait(5)
        deadline.cancel()
        assert _shut(b)  # shut before cancel returned, not after
        time.sleep(0.4)


class _SlowToList(list[socket.socket]):
    """The sockets of a deadline, a socket appended to them 0.5 s after it is opened, or as
    soon as the deadline passed (a thread descheduled between the two)."""

    deadline: CallDeadline | None = None

    def append(self, sock: socket.socket) -> None:
        waited = time.monotonic() + 0.5
        while self.deadline is not None and not self.deadline.passed and time.monotonic() < waited:
            time.sleep(0.01)
        super().append(sock)


def test_a_socket_opened_as_the_deadline_passes_is_shut() -> None:
    """`opened` saw the deadline not passed, the watchdog hung up the sockets listed, then the
    new socket was listed: never shut (a request then bounded only by its read timeout, a
    server dribbling its answer kept it going). Its check and listing are one step now: the
    socket is listed before the hang-up, or refused after it."""
    a, b = socket.socketpair()
    with a, b:
        sockets = _SlowToList()
        deadline = sockets.deadline = CallDeadline(0.05, "opening", sockets)
        try:
            deadline.opened(a)
        except TimeoutError:
            pytest.fail("the socket was opened before the deadline passed")
        time.sleep(0.3)
        assert deadline.passed
        assert _shut(b)


def test_a_forked_child_has_a_watchdog_of_its_own() -> None:
    """A child forked while deadlines are watched (the watchdog waiting, its lock maybe held)
    starts a watchdog of its own: its deadlines pass."""
    watched = CallDeadline(30, "parent's", [])
    try:
        pid = os.fork()
        if pid == 0:  # the child: no pytest here, only an exit code
            ok = 1
            try:
                a, b = socket.socketpair()
                deadline = CallDeadline(0.05, "child's", [a])
                time.sleep(0.5)
                ok = 0 if deadline.passed and _shut(b) else 1
            finally:
                os._exit(ok)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        watched.cancel()


def test_in_all_bounds_the_calls_of_a_block_and_says_so() -> None:
    with in_all(0.2, "the listing"):
        first = CallDeadline(30, "page 1", [])
        time.sleep(0.4)
        assert first.passed
        later = CallDeadline(30, "page 2", [])  # started past it: passed at once
        assert later.passed
        with (
            pytest.raises(
                TimeoutError, match=r"^the listing \(page 2\): not done within 0.2 s in all"
            ),
            later.watching(),
        ):
            pass
    after = CallDeadline(30, "after", [])  # the block is over
    assert not after.passed
    after.cancel()


PAGES = 8
PAGE_SECONDS = 0.4


def _meter(n: int) -> dict[str, Any]:
    return {
        "id": f"mtr_{n}",
        "object": "billing.meter",
        "event_name": f"event_{n}",
        "display_name": f"Meter {n}",
        "status": "active",
        "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        "value_settings": {"event_payload_key": "value"},
        "default_aggregation": {"formula": "sum"},
        "event_time_window": None,
        "status_transitions": {"deactivated_at": None},
        "created": 1764000000,
        "livemode": False,
    }


@pytest.fixture
def slow_meters() -> Iterator[tuple[str, list[str]]]:
    """An API host answering the meter list a meter a page, each page after PAGE_SECONDS
    (well within a request's deadline), PAGES pages; the pages asked for."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # http.server's name
            asked.append(self.path)
            after = parse_qs(urlsplit(self.path).query).get("starting_after", ["mtr_-1"])[0]
            n = int(after.removeprefix("mtr_")) + 1
            time.sleep(PAGE_SECONDS)
            page = {
                "object": "list",
                "url": "/v1/billing/meters",
                "has_more": n < PAGES - 1,
                "data": [_meter(n)],
            }
            body = json.dumps(page).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", asked
    finally:
        server.shutdown()
        server.server_close()


def test_the_meter_list_ends_within_its_deadline_in_all(
    slow_meters: tuple[str, list[str]],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each page of the meter list had its deadline (CALL_SECONDS), the listing none: 200
    meters and more answered slowly held the meter source's lock, and a poller pass that
    beats nothing meanwhile, past MFX_HEARTBEAT_SILENCE (here 8 pages of 0.4 s, each well
    within its 1 s, read in 3.2 s). The listing now ends within its own deadline in all
    (list_seconds, here 1 s), failing as a dropped connection does; every page is read when
    it has the time."""
    url, asked = slow_meters
    monkeypatch.setattr(stripe_client, "CALL_SECONDS", 1.0)
    settings = make_settings(stripe_api_key="sk_test_x", stripe_api_base=url)
    client = build_stripe_client(settings, max_network_retries=1)
    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError) as info:
        StripeMeterSource(client, list_seconds=1.0).meters()
    took = time.monotonic() - started
    assert took < 2.5, took
    assert "the meter list, every page (GET /v1/billing/meters): not done within 1 s in all" in (
        str(info.value)
    )
    assert 2 <= len(asked) <= 4, asked  # the pages begun within the second, not all 8
    meters = StripeMeterSource(client, list_seconds=10).meters()
    assert [m.id for m in meters] == [f"mtr_{n}" for n in range(PAGES)]
