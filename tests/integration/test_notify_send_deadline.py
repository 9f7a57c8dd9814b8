"""A send has a deadline in all (README: "Sends have timeouts, so they never stall the
worker"), against real servers over real sockets that answer a byte at a time: an SMTP
tarpit sending `220-` greeting lines, a Slack receiver trickling a 200's body. Each one
kept a send going for minutes (the per-read timeouts never fire), holding the digest pass
and every channel's critical alerts; at the deadline the connection is now shut from our
side and the send fails as temporary."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from service.adapters.channels import ChannelName, Message
from service.adapters.slack import SlackChannel
from service.adapters.smtp import EmailChannel, SmtpTarget
from service.errors import DeliveryFailed
from service.models.alerts import Alert, DigestRun
from service.notify.alerts import NOTIFY_STATE
from service.notify.critical import send_critical_alerts
from service.notify.digests import DigestSender
from tests.integration.notify_helpers import NOW, SlackReceiver, raise_gave_up, seed_activity
from tests.servers import serve_wsgi

DEADLINE = 1.0
DRIP_EVERY = 0.2  # far below the per-read timeouts (15 s, 10 s): they never fire
BUDGET = 15.0  # the tarpit gives up after this (without the deadline, the test fails, not hangs)
# Past the deadline, what a loaded machine may take to end the send (and a digest pass's
# database work): far below BUDGET, so a send the deadline did not end still fails
LATE = 5.0


class Tarpit:
    """A TCP server that answers each connection with `first`, then one `drip` every
    DRIP_EVERY seconds; it notes when the client shuts the connection. `http`: it reads a
    request (headers and body) first."""

    def __init__(self, first: bytes, drip: bytes, *, http: bool) -> None:
        self.first, self.drip, self.http = first, drip, http
        self.connections = 0
        self.hung_up = 0  # connections the client shut (read as end of stream)
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self._started = time.monotonic()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set() and time.monotonic() - self._started < BUDGET:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._trickle, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            if self.http:
                _read_request(conn)
            conn.sendall(self.first)
            conn.settimeout(DRIP_EVERY)
            while not self._stop.is_set() and time.monotonic() - self._started < BUDGET:
                try:
                    if conn.recv(1024) == b"":
                        self.hung_up += 1
                        return
                except TimeoutError:
                    pass
                except OSError:
                    self.hung_up += 1
                    return
                try:
                    conn.sendall(self.drip)
                except OSError:
                    self.hung_up += 1
                    return


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += conn.recv(4096)


@pytest.fixture
def smtp_tarpit() -> Iterator[Tarpit]:
    tarpit = Tarpit(b"220-mx.example.com greets you slowly\r\n", b"220-still here\r\n", http=False)
    yield tarpit
    tarpit.close()


@pytest.fixture
def slack_tarpit() -> Iterator[Tarpit]:
    first = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"
    tarpit = Tarpit(first, b"o", http=True)
    yield tarpit
    tarpit.close()


def _email(port: int) -> EmailChannel:
    target = SmtpTarget.parse(f"smtp://127.0.0.1:{port}")
    return EmailChannel(target, "meterfix@example.com", ["ops@example.com"], deadline=DEADLINE)


def _slack(port: int) -> SlackChannel:
    return SlackChannel(f"http://127.0.0.1:{port}/services/T0/B0/SECRET", deadline=DEADLINE)


def _timer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if isinstance(t, threading.Timer)]


@pytest.mark.parametrize("kind", ["email", "slack"])
def test_a_send_to_a_server_answering_a_byte_at_a_time_ends_at_its_deadline(
    kind: str, smtp_tarpit: Tarpit, slack_tarpit: Tarpit
) -> None:
    tarpit = smtp_tarpit if kind == "email" else slack_tarpit
    channel = _email(tarpit.port) if kind == "email" else _slack(tarpit.port)
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as failed:
        channel.send(Message(subject="s", text="t", html="<p>t</p>"))
    took = time.monotonic() - started
    assert took < DEADLINE + LATE, took
    assert not failed.value.permanent and "deadline" in failed.value.reason
    assert "SECRET" not in failed.value.reason
    assert tarpit.connections == 1
    for _ in range(50):  # our side shut the connection: the server sees its end at once
        if tarpit.hung_up == 1:
            break
        time.sleep(0.02)
    assert tarpit.hung_up == 1
    assert _timer_threads() == []  # nothing left running after the send


def test_the_digest_pass_ends_and_retries_later(
    db_engine: Engine, db_url: str, make_settings: Any, smtp_tarpit: Tarpit
) -> None:
    seed_activity(db_engine)
    settings = make_settings(database_url=db_url, mfx_public_url="https://mfx.example.com")
    channel = _email(smtp_tarpit.port)
    sender = DigestSender(db_engine, settings, [channel], instance="t", clock=lambda: NOW)
    started = time.monotonic()
    [outcome] = sender.tick()
    assert time.monotonic() - started < DEADLINE + LATE
    assert outcome.status == "failed" and "deadline" in outcome.reason
    with Session(db_engine) as session:
        [row] = session.exec(select(DigestRun)).all()
    assert row.next_attempt_at is not None  # temporary: tried again later


def test_a_tarpitted_channel_holds_no_critical_alert_back_from_the_other(
    db_engine: Engine, db_url: str, make_settings: Any, slack_tarpit: Tarpit
) -> None:
    receiver = SlackReceiver()
    with serve_wsgi(receiver) as server:
        settings = make_settings(database_url=db_url, mfx_public_url="https://mfx.example.com")
        slack = SlackChannel(f"{server.url}/services/T0/B0/X", deadline=DEADLINE)
        tarpitted = _slack(slack_tarpit.port)
        tarpitted.name = ChannelName.EMAIL  # two channels, one kind of server
        raise_gave_up(db_engine)
        started = time.monotonic()
        send_critical_alerts(db_engine, settings, [tarpitted, slack])
        assert time.monotonic() - started < DEADLINE + LATE
    assert "in/k.csv: the poller gave up" in receiver.texts()
    with Session(db_engine) as session:
        [alert] = session.exec(select(Alert)).all()
    state: Any = alert.detail[NOTIFY_STATE]
    raised = state["raised"]
    assert raised["channels"] == ["slack"] and raised.get("next_at"), raised
    assert "given_up" not in raised
