"""What a send counts as "may have arrived" is only a try whose message went out whole without
an answer (service.adapters.smtp, service.adapters.slack), and a digest that may have arrived
is sent once more at most, then recorded unsure (service.notify.digests). Real servers: an
aiosmtpd server, behind a small front that drops the connection at DATA or holds its answer;
Slack receivers reading each request whole; SQLite and PostgreSQL. Each test failed on the
code before its fix (its docstring says what was seen)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from service.adapters.channels import Message
from service.adapters.slack import SlackChannel
from service.adapters.smtp import EmailChannel, SmtpTarget
from service.config import Settings
from service.db import make_engine
from service.models.alerts import Alert, DigestRun
from service.notify.digests import DigestSender
from tests.integration.notify_helpers import NOW, Mailbox, raise_gave_up, seed_activity
from tests.integration.test_critical_retry_wait import serving
from tests.integration.test_critical_unanswered import (
    E503,
    OK,
    NoAnswerToData,
    claim,
    no_wait,
    one_pass,
    scripted,
)

SUBJECT = "in/k.csv: the poller gave up"  # raise_gave_up's incident
# A 503 whose body is cut mid-read: its status line and head came, 5 of its 100 bytes.
E503_CUT = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\nshort"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@contextmanager
def smtp_front(real_port: int, fronts: int, *, at_data: str) -> Iterator[tuple[int, list[bytes]]]:
    """An SMTP server in front of the real one (`real_port`): its first `fronts` connections
    it answers itself, EHLO, MAIL and RCPT with 250, and at DATA (`at_data`) closes the
    connection ("close") or never answers ("hold"), before any 354: nothing of the message
    went out. Later connections are passed to the real server. Its port, and the commands
    it read."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []
    held: list[socket.socket] = []

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def front(connection: socket.socket) -> None:
        reader = connection.makefile("rb")
        connection.sendall(b"220 front ESMTP\r\n")
        while line := reader.readline():
            command = line.strip().upper()
            seen.append(command.split(b" ")[0].split(b":")[0])
            if command == b"DATA":
                if at_data == "close":
                    connection.close()
                else:
                    held.append(connection)
                return
            connection.sendall(b"250 ok\r\n")

    def serve() -> None:
        accepted = 0
        while True:
            try:
                connection = listener.accept()[0]
            except OSError:  # closed at the end of the test
                return
            accepted += 1
            if accepted <= fronts:
                front(connection)
                continue
            upstream = socket.create_connection(("127.0.0.1", real_port))
            for ends in ((connection, upstream), (upstream, connection)):
                threading.Thread(target=pump, args=ends, daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        listener.close()
        for connection in held:
            connection.close()
        thread.join(5)


def email_settings(make_settings: Callable[..., Settings], engine: Engine, port: int) -> Settings:
    return make_settings(
        database_url=str(engine.url),
        smtp_url=f"smtp://127.0.0.1:{port}",
        digest_email_to="ops@example.com",
    )


def email_channel(port: int, **options: Any) -> EmailChannel:
    target = SmtpTarget.parse(f"smtp://127.0.0.1:{port}")
    return EmailChannel(target, "meterfix@example.com", ["ops@example.com"], **options)


def subjects(mailbox: Mailbox) -> list[str]:
    return [str(message["Subject"]) for _, _, message in mailbox.received]


def test_a_connection_dropped_at_data_before_354_is_tried_again_in_the_send(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """The server closed the connection when it read DATA, before its 354: no byte of the
    email went out. It was counted as an email that may have arrived: the send stopped
    there, the next pass sent it once more into the same drop and marked it unsure; after
    five passes no email had gone out and the claim said ('unsure', 1). Now only a message
    sent whole after a 354 may have arrived: the send tries again, and its third try, passed
    to the real server, delivers it, marked sent."""
    raise_gave_up(engine)
    mailbox = Mailbox()
    with serving(mailbox) as real, smtp_front(real, 2, at_data="close") as (port, seen):
        settings = email_settings(make_settings, engine, port)
        email = email_channel(port, sleep=no_wait)
        t0 = datetime.now(UTC)
        for minutes in (0, 30, 60):
            one_pass(engine, settings, email, t0 + timedelta(minutes=minutes))
    assert seen.count(b"DATA") == 2
    assert subjects(mailbox) == [f"[meterfix] CRITICAL: {SUBJECT}"]
    assert claim(engine) == ("sent", 0)


def test_no_354_in_time_is_an_ordinary_failure_tried_again(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """The server never answered DATA (no 354 within the read timeout): nothing of the email
    went out, yet the send stopped as if it may have arrived (claim left sending, resent
    once by the next pass, then unsure). Now it is tried again in the send: one email."""
    raise_gave_up(engine)
    mailbox = Mailbox()
    with serving(mailbox) as real, smtp_front(real, 1, at_data="hold") as (port, seen):
        settings = email_settings(make_settings, engine, port)
        email = email_channel(port, sleep=no_wait, timeout=0.5)
        one_pass(engine, settings, email, datetime.now(UTC))
    assert seen.count(b"DATA") == 1
    assert subjects(mailbox) == [f"[meterfix] CRITICAL: {SUBJECT}"]
    assert claim(engine) == ("sent", 0)


class SlowToAnswerData(Mailbox):
    """Takes the message and answers its end after `delay` seconds (a server scanning it)."""

    delay = 1.5

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


def test_the_answer_to_the_end_of_data_is_waited_for_up_to_the_send_deadline() -> None:
    """A server answering the message's end after the per-read timeout (15 s by default;
    0.5 s here, the server taking 1.5 s) had the send stop as 'sent, no answer' (it may
    have arrived: a critical alert was sent again, a digest counted so) though the server
    answered 250 in time for the send's deadline. RFC 5321 has a client wait up to 10
    minutes for that answer; now it is waited for up to the send's deadline: sent, once."""
    mailbox = SlowToAnswerData()
    with serving(mailbox) as port:
        email = email_channel(port, sleep=no_wait, timeout=0.5, deadline=10)
        email.send(Message(subject="slow", text="t", html="<p>t</p>"))
    assert subjects(mailbox) == ["slow"]


def test_a_503_whose_body_is_cut_is_slacks_refusal_tried_again(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """Slack answered 503 and the connection closed mid-body (5 of 100 bytes): slack_sdk's
    HTTPError branch raised IncompleteRead reading it, taken for a try with no answer (the
    message may have arrived: sent once more by the next pass, then unsure). A status line
    came: Slack said it did not post it. The send tries again; the next try posts it."""
    raise_gave_up(engine)
    with scripted([E503_CUT, OK]) as (url, seen):
        settings = make_settings(database_url=str(engine.url), slack_webhook_url=url)
        one_pass(engine, settings, SlackChannel(url, sleep=no_wait), datetime.now(UTC))
    assert len(seen) == 2 and all(f"CRITICAL: {SUBJECT}".encode() in body for body, _ in seen)
    assert claim(engine) == ("sent", 0)


def digest_rows(engine: Engine) -> list[DigestRun]:
    with Session(engine) as session:
        return list(session.exec(select(DigestRun)).all())


def alerts(engine: Engine) -> list[Alert]:
    with Session(engine) as session:
        return list(session.exec(select(Alert).where(Alert.kind == "digest.failed")).all())


def ticks(engine: Engine, settings: Settings, channel: Any, hours: int = 24) -> None:
    """The digest's scheduled passes every 2 hours from NOW (past every backoff, up to an
    hour), the one window of seed_activity due at the first."""
    for hour in range(0, hours, 2):
        at = NOW + timedelta(hours=hour)
        DigestSender(engine, settings, [channel], instance="t", clock=lambda at=at: at).tick()


def test_a_digest_taken_without_an_answer_is_sent_twice_at_most(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """The SMTP server took each digest and dropped the connection before answering: the
    window was recorded failed, sent again at each backoff: 8 emails, the window failed,
    and a warning alert said it 'could not be sent'. Now it is sent once more, then
    recorded unsure and never sent again: 2 emails, the alert saying it may have arrived."""
    seed_activity(engine)
    mailbox = NoAnswerToData()
    with serving(mailbox) as port:
        settings = email_settings(make_settings, engine, port)
        ticks(engine, settings, email_channel(port, sleep=no_wait))
    assert len(mailbox.received) == 2
    [row] = digest_rows(engine)
    assert (row.status, row.attempts, row.next_attempt_at) == ("unsure", 2, None)
    assert row.summary == {"unanswered": 2}
    assert row.last_error is not None and "it may have arrived" in row.last_error
    [alert] = alerts(engine)
    assert alert.subject == (
        "email digest for 2026-11-29 00:00 to 2026-11-30 00:00 UTC may have arrived: "
        "sent without an answer, not sent again"
    )
    assert alert.message is not None and "2 sends without an answer" in alert.message


def test_a_digest_posted_without_an_answer_then_answered_is_sent(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """Slack took the POST whole and did not answer, then answered the next send's: the
    window is sent, its summary saying one send before had no answer (it may be there twice);
    before, the same POSTs but nothing recorded that the first may have arrived."""
    seed_activity(engine)
    with scripted([None, OK]) as (url, seen):
        settings = make_settings(database_url=str(engine.url), slack_webhook_url=url)
        ticks(engine, settings, SlackChannel(url, sleep=no_wait), hours=6)
    assert len(seen) == 2 and seen[0][0] == seen[1][0]
    [row] = digest_rows(engine)
    assert (row.status, row.attempts, row.summary["unanswered"]) == ("sent", 2, 1)
    assert alerts(engine) == []


def test_a_digest_unanswered_then_refused_until_given_up_may_have_arrived(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """The first POST went unanswered, every later one was refused (503) until the attempts
    ran out: the window ended failed and the alert said it 'could not be sent', though the
    first may have been posted. Now it ends unsure, the alert saying it may have arrived."""
    seed_activity(engine)
    with scripted([None] + [E503] * 40) as (url, seen):
        settings = make_settings(database_url=str(engine.url), slack_webhook_url=url)
        ticks(engine, settings, SlackChannel(url, sleep=no_wait))
    assert [answer[:12] for _, answer in seen[:2]] == [b"", b"HTTP/1.1 503"]
    assert len(seen) == 1 + 7 * 4  # 8 attempts, the later ones 4 tries each
    [row] = digest_rows(engine)
    assert (row.status, row.attempts, row.summary) == ("unsure", 8, {"unanswered": 1})
    [alert] = alerts(engine)
    assert "may have arrived" in alert.subject and "could not" not in alert.subject
    assert alert.message is not None and "HTTP 503" in alert.message
