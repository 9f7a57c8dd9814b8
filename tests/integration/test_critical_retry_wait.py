"""A critical message whose sender stops while it waits between its own tries (a 429 with
Retry-After, a 5xx, an SMTP 4xx) is simply tried again, never counted as possibly delivered:
the try failed, nothing arrived (service.notify.critical, the senders' `BetweenTries`). Real
processes killed with SIGKILL during the wait, a real Slack receiver and SMTP server (aiosmtpd),
SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, event
from sqlmodel import Session, select
from werkzeug.serving import make_server

from service.adapters.channels import build_channels
from service.adapters.slack import SlackChannel
from service.adapters.smtp import EmailChannel, SmtpTarget
from service.config import Settings
from service.db import make_engine
from service.db.migrate import upgrade
from service.models.alerts import Alert, CriticalMessage, MessageStatus
from service.notify.critical import send_critical_alerts
from service.notify.critical_send import STALE_CLAIM
from service.notify.message_store import MessageClaim, claim_message, mark_message
from tests.integration.notify_helpers import Mailbox, SlackReceiver, raise_gave_up, smtp_server
from tests.servers import free_port, serve_wsgi

SUBJECT = "in/k.csv: the poller gave up"  # raise_gave_up's incident
# One pass of the critical job, `minutes` ahead of the clock. The senders' first backoff is
# 20 s here (1 s and 2 s in service): a 5xx or an SMTP 4xx waits long enough to be killed in.
SENDER = """
import sys
from datetime import UTC, datetime, timedelta
from service.adapters import slack, smtp
from service.adapters.channels import build_channels
from service.adapters.slack import SlackChannel
from service.adapters.smtp import EmailChannel, SmtpTarget
from service.config import Settings
from service.db import make_engine
from service.db.migrate import upgrade
from service.models.alerts import MessageStatus
from service.notify.critical import send_critical_alerts
from service.notify.critical_send import STALE_CLAIM
from service.notify.message_store import MessageClaim, claim_message, mark_message
slack.FIRST_BACKOFF_SECONDS = smtp.FIRST_BACKOFF_SECONDS = 20.0
url, slack_url, smtp_url, minutes = sys.argv[1:5]
settings = Settings(_env_file=None, database_url=url, slack_webhook_url=slack_url,
                    smtp_url=smtp_url, digest_email_to="ops@example.com")
ahead = timedelta(minutes=int(minutes))
send_critical_alerts(make_engine(url), settings, build_channels(settings),
                     clock=lambda: datetime.now(UTC) + ahead)
"""


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def slack() -> Iterator[tuple[SlackReceiver, str]]:
    receiver = SlackReceiver()
    with serve_wsgi(receiver) as server:
        yield receiver, f"{server.url}/services/T/B/X"


class RefusingMailbox(Mailbox):
    """An SMTP server's mailbox that answers `451` to the first `refusals` MAIL commands
    (a server short of resources: try again later); `refused` is set at each."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals
        self.refused = threading.Event()

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.refusals > 0:
            self.refusals -= 1
            self.refused.set()
            return "451 4.3.1 Insufficient system storage, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"


@contextmanager
def serving(mailbox: Mailbox) -> Iterator[int]:
    """An aiosmtpd server delivering into `mailbox`, on a free loopback port."""
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


@contextmanager
def serving_wsgi(app: Any, port: int) -> Iterator[None]:
    """`app` served on `port` (given: a port that refused a try a moment before)."""
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def claim_status(engine: Engine, channel: str) -> str | None:
    with engine.connect() as connection:
        query = select(CriticalMessage.status).where(CriticalMessage.channel == channel)
        return connection.execute(query).scalar()


def kill_sender_in_its_wait(
    engine: Engine,
    db_url: str,
    urls: tuple[str, str],
    minutes: int,
    channel: str,
    refused: threading.Event,
) -> None:
    """Run one pass of the critical job in its own process, `minutes` ahead, and SIGKILL it
    once `channel`'s server refused its try, while it waits for the next (a stopped worker:
    its 5 s grace is shorter than the wait). It is killed once its claim says the try
    failed, or 5 s after the refusal, well inside its 20 s wait."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    args = [sys.executable, "-c", SENDER, db_url, *urls, str(minutes)]
    doomed = subprocess.Popen(args, env=env)
    try:
        assert refused.wait(30), "the sender never reached the server"
        waited = time.monotonic() + 5
        while claim_status(engine, channel) != "failed" and time.monotonic() < waited:
            time.sleep(0.05)
        assert doomed.poll() is None, "the sender did not wait for its next try"
        doomed.send_signal(signal.SIGKILL)
        assert doomed.wait(10) == -signal.SIGKILL
    finally:
        doomed.kill()
        refused.clear()


def the_alert(engine: Engine) -> Alert:
    with Session(engine) as session:
        return session.exec(select(Alert)).one()


def assert_sent_once_and_sure(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    alert = the_alert(engine)
    raised = alert.detail["notify"]["raised"]
    assert alert.notified_at is not None
    assert raised["channels"] == ["email", "slack"] and "unsure" not in raised, raised
    with engine.connect() as connection:
        claims = connection.execute(
            select(CriticalMessage.channel, CriticalMessage.status, CriticalMessage.resends)
        ).all()
    assert sorted(tuple(c) for c in claims) == [("email", "sent", 0), ("slack", "sent", 0)]
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "alert.notify_resent" not in said and "alert.notify_unsure" not in said, said


def test_slack_waiting_after_429_and_503_twice_killed_sends_it_once_after(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    slack: tuple[SlackReceiver, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Slack answered 429 (Retry-After: 20) and the sender, waiting, was stopped; its claim
    stayed `sending`. The next pass took it for a send cut off mid-way and sent it once more
    (logged as possibly arriving twice): Slack answered 503, and that sender too was stopped
    in its wait. The pass after marked the message unsure and never sent it: a critical
    alert lost, though Slack had refused it both times. Now each refused try marks the claim
    failed before the wait: the third pass sends it, once."""
    receiver, slack_url = slack
    raise_gave_up(engine)
    with smtp_server() as (mailbox, port):
        urls = (slack_url, f"smtp://127.0.0.1:{port}")
        receiver.answers = [("429 Too Many Requests", [("Retry-After", "20")])]
        kill_sender_in_its_wait(engine, db_url, urls, 0, "slack", receiver.entered)
        receiver.answers = [("503 Service Unavailable", [])]
        kill_sender_in_its_wait(engine, db_url, urls, 5, "slack", receiver.entered)
        assert receiver.answers == [] and mailbox.received == []
        settings = make_settings(
            database_url=db_url,
            slack_webhook_url=slack_url,
            smtp_url=urls[1],
            digest_email_to="ops@example.com",
        )
        later = datetime.now(UTC) + timedelta(minutes=10)
        with caplog.at_level(logging.INFO, logger="meterfix"):
            send_critical_alerts(engine, settings, build_channels(settings), clock=lambda: later)
        # two refused POSTs (429, 503), then the one Slack posted
        assert [body["text"] for body in receiver.bodies] == [f"CRITICAL: {SUBJECT}"] * 3
        assert [str(m["Subject"]) for _, _, m in mailbox.received] == [
            f"[meterfix] CRITICAL: {SUBJECT}"
        ]
    assert_sent_once_and_sure(engine, caplog)


def test_email_waiting_after_451_twice_killed_sends_it_once_after(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    slack: tuple[SlackReceiver, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The SMTP server answered MAIL with 451 (try again later) and the sender was stopped
    while it waited to try again, twice: the email was marked unsure and never sent. Now
    the third pass sends it, once; Slack had it from the first pass, once."""
    receiver, slack_url = slack
    raise_gave_up(engine)
    mailbox = RefusingMailbox(refusals=2)
    with serving(mailbox) as port:
        urls = (slack_url, f"smtp://127.0.0.1:{port}")
        kill_sender_in_its_wait(engine, db_url, urls, 0, "email", mailbox.refused)
        kill_sender_in_its_wait(engine, db_url, urls, 5, "email", mailbox.refused)
        assert mailbox.refusals == 0 and mailbox.received == []
        settings = make_settings(
            database_url=db_url,
            slack_webhook_url=slack_url,
            smtp_url=urls[1],
            digest_email_to="ops@example.com",
        )
        later = datetime.now(UTC) + timedelta(minutes=10)
        with caplog.at_level(logging.INFO, logger="meterfix"):
            send_critical_alerts(engine, settings, build_channels(settings), clock=lambda: later)
        assert [str(m["Subject"]) for _, _, m in mailbox.received] == [
            f"[meterfix] CRITICAL: {SUBJECT}"
        ]
    assert [body["text"] for body in receiver.bodies] == [f"CRITICAL: {SUBJECT}"]
    assert_sent_once_and_sure(engine, caplog)


# --- in one process: what the claim says during the wait, and around it ---------------------


def slack_pass(
    engine: Engine, make_settings: Callable[..., Settings], url: str, sleep: Callable[[float], None]
) -> None:
    """One pass of the critical job with Slack only, its waits between tries in `sleep`."""
    settings = make_settings(database_url=str(engine.url), slack_webhook_url=url)
    send_critical_alerts(engine, settings, [SlackChannel(url, sleep=sleep)])


def test_a_refused_connection_leaves_the_claim_failed_while_the_send_waits(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """Nothing listened on Slack's port (a refused connection): during the wait before the
    next try the claim said `sending`, as if the message might have arrived. Now it says
    `failed` then, and `sending` again for the next try, which Slack (started meanwhile)
    answers: the message arrives once, marked sent."""
    raise_gave_up(engine)
    port = free_port()
    receiver, during_wait, servers = SlackReceiver(), [], ExitStack()

    def wait(seconds: float) -> None:
        during_wait.append(claim_status(engine, "slack"))
        servers.enter_context(serving_wsgi(receiver, port))

    with servers:
        url = f"http://127.0.0.1:{port}/services/T/B/X"
        slack_pass(engine, make_settings, url, wait)
    assert during_wait == ["failed"]
    assert [body["text"] for body in receiver.bodies] == [f"CRITICAL: {SUBJECT}"]
    assert claim_status(engine, "slack") == "sent"
    assert the_alert(engine).detail["notify"]["raised"]["channels"] == ["slack"]


def test_a_message_another_sender_claimed_during_the_wait_is_not_sent_again(
    engine: Engine,
    make_settings: Callable[..., Settings],
    slack: tuple[SlackReceiver, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While a send waited after a 429 (its claim `failed`), another sender (a next leader)
    claimed the message and Slack posted it; the first, its wait over, finds the claim no
    longer its own and stops: Slack posted it once."""
    receiver, url = slack
    raise_gave_up(engine)
    receiver.answers = [("429 Too Many Requests", [("Retry-After", "1")])]

    def wait(seconds: float) -> None:  # the next leader's pass, while this one waits
        slack_pass(engine, make_settings, url, time.sleep)

    with caplog.at_level(logging.INFO, logger="meterfix"):
        slack_pass(engine, make_settings, url, wait)
        slack_pass(engine, make_settings, url, time.sleep)  # the pass after: nothing more
    taken = [r.getMessage() for r in caplog.records if "alert.notify_taken_over" in r.getMessage()]
    assert len(taken) == 1 and "slack" in taken[0], taken
    # the refused POST, then the other sender's, posted
    assert [body["text"] for body in receiver.bodies] == [f"CRITICAL: {SUBJECT}"] * 2
    assert receiver.answers == []
    assert claim_status(engine, "slack") == "sent"
    alert = the_alert(engine)
    assert alert.notified_at is not None
    assert alert.detail["notify"]["raised"]["channels"] == ["slack"]


def test_a_try_slack_may_have_posted_ends_the_send_its_claim_saying_so(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """A try that reached Slack and got no answer (the connection closed after the body
    went) may have been posted: the send stops there, never waiting to post it again (it
    did, and a Slack that never answered had it on every try), its claim `sending` with its
    send over, unlike a try Slack refused. The next pass sends it once more, as a message
    that may have arrived (resends 1), and Slack's answer marks it sent."""
    raise_gave_up(engine)
    with unanswered_once() as (port, bodies):
        during_wait: list[str | None] = []

        def wait(seconds: float) -> None:
            during_wait.append(claim_status(engine, "slack"))

        url = f"http://127.0.0.1:{port}/services/T/B/X"
        slack_pass(engine, make_settings, url, wait)
        assert len(bodies) == 1 and during_wait == []
        with engine.connect() as connection:
            query = select(CriticalMessage.status, CriticalMessage.finished_at)
            status, finished_at = connection.execute(query).one()
        assert status == "sending" and finished_at is not None
        later = datetime.now(UTC) + timedelta(minutes=5)  # past the pass's backoff
        settings = make_settings(database_url=str(engine.url), slack_webhook_url=url)
        channel = SlackChannel(url, sleep=wait)
        send_critical_alerts(engine, settings, [channel], clock=lambda: later)
    assert len(bodies) == 2 and all(f"CRITICAL: {SUBJECT}".encode() in b for b in bodies)
    with engine.connect() as connection:
        claim = connection.execute(select(CriticalMessage.status, CriticalMessage.resends)).one()
    assert tuple(claim) == ("sent", 1)


@contextmanager
def unanswered_once() -> Iterator[tuple[int, list[bytes]]]:
    """A Slack webhook that reads the first request whole and closes without answering,
    then answers 200 "ok": (its port, the request bodies read)."""
    listener = socket.create_server(("127.0.0.1", 0))
    bodies: list[bytes] = []

    def serve() -> None:
        for answer in (
            None,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        ):
            try:
                connection = listener.accept()[0]
            except OSError:  # closed at the end of the test
                return
            with connection:
                bodies.append(read_request(connection))
                if answer is not None:
                    connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], bodies
    finally:
        listener.close()
        thread.join(5)


def read_request(connection: socket.socket) -> bytes:
    """One HTTP request's body (its head says its length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(65536)
    return body


def test_a_failed_resend_does_not_reset_its_count(engine: Engine) -> None:
    """The first sender stopped mid-send (the message may have arrived); the second sent it
    once more, and that try failed for sure (marked failed). The next claim of the failed
    message reset its resends to 0, so when that sender too stopped mid-send it was sent a
    third time, each of them possibly arriving. Now the count stays with the incident: that
    claim left `sending` is marked unsure, never sent a third time."""
    raise_gave_up(engine)
    with engine.connect() as connection:
        alert = connection.execute(select(Alert.id, Alert.created_at)).one()._asdict()
    t0 = datetime.now(UTC)

    def claim(who: str, at: datetime) -> MessageClaim:
        stale_before = at - STALE_CLAIM
        return claim_message(
            engine, alert, "raised", "slack", who, now=at, stale_before=stale_before
        )

    assert claim("a", t0).ours  # a stops mid-send
    assert claim("b", t0 + timedelta(minutes=2)).resent
    at = t0 + timedelta(minutes=2, seconds=5)
    mark_message(engine, alert, "raised", "slack", "b", status=MessageStatus.FAILED, now=at)
    third = claim("c", t0 + timedelta(minutes=3))  # the failed message: c stops mid-send
    assert third.ours and not third.resent
    fourth = claim("d", t0 + timedelta(minutes=6))
    assert (fourth.ours, fourth.status, fourth.made_unsure) == (False, "unsure", True)
    with engine.connect() as connection:
        row = connection.execute(select(CriticalMessage.resends, CriticalMessage.status)).one()
    assert tuple(row) == (1, "unsure")


def no_wait(seconds: float) -> None:
    """A send's wait between tries, over at once."""


class ClosingMailbox(Mailbox):
    """A server that takes the message, then answers QUIT with a 421 (shutting down)."""

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        return "421 4.3.2 Service shutting down"


def test_an_email_taken_then_quit_answered_421_is_sent_once(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """The SMTP server took the message (250 after DATA) and answered QUIT with a 421: the
    send took that for a failure and sent the message again, three times in all, then
    marked it failed and the next pass sent it three times more. Now what QUIT meets is
    left alone once the message is taken: it went once, marked sent."""
    raise_gave_up(engine)
    mailbox = ClosingMailbox()
    with serving(mailbox) as port:
        settings = make_settings(
            database_url=str(engine.url),
            smtp_url=f"smtp://127.0.0.1:{port}",
            digest_email_to="ops@example.com",
        )
        target = SmtpTarget.parse(settings.smtp_url)
        email = EmailChannel(target, "meterfix@example.com", ["ops@example.com"], sleep=no_wait)
        for later in (0, 10):
            at = datetime.now(UTC) + timedelta(minutes=later)
            send_critical_alerts(engine, settings, [email], clock=lambda t=at: t)
    assert [str(m["Subject"]) for _, _, m in mailbox.received] == [
        f"[meterfix] CRITICAL: {SUBJECT}"
    ]
    assert claim_status(engine, "email") == "sent"
    assert the_alert(engine).detail["notify"]["raised"]["channels"] == ["email"]


class LockingSlack(SlackReceiver):
    """A Slack receiver that, as it posts the message, has another connection hold SQLite's
    write lock on `database` for `seconds` (`released_at`: when it let go)."""

    def __init__(self, database: Path, seconds: float) -> None:
        super().__init__()
        self.database, self.seconds = database, seconds
        self.released_at: datetime | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        holder = sqlite3.connect(self.database, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # the one writer a SQLite database has

        def release() -> None:
            holder.execute("ROLLBACK")
            holder.close()
            self.released_at = datetime.now(UTC)

        threading.Timer(self.seconds, release).start()
        return super().__call__(environ, start_response)


def test_a_message_sent_is_marked_once_the_database_lets_it(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """Slack posted the message and the database was locked by another connection for a
    moment (SQLite here, its busy timeout made short): marking it sent failed once and was
    tried again (`MARK_RETRIES`), and it is marked sent after the lock went, Slack posting
    it once; unmarked, the next pass took it for a send cut off and sent it again."""
    database = tmp_path / "locked.db"
    url = f"sqlite:///{database}"
    upgrade(url)
    engine = make_engine(url)
    event.listen(engine, "connect", short_busy_timeout)  # after make_engine's 30 s
    receiver = LockingSlack(database, seconds=0.6)
    try:
        raise_gave_up(engine)
        with serve_wsgi(receiver) as server:
            slack_url = f"{server.url}/services/T/B/X"
            settings = make_settings(database_url=url, slack_webhook_url=slack_url)
            send_critical_alerts(engine, settings, build_channels(settings))
            later = datetime.now(UTC) + timedelta(minutes=10)  # its claim would be stale
            send_critical_alerts(engine, settings, build_channels(settings), clock=lambda: later)
        assert [body["text"] for body in receiver.bodies] == [f"CRITICAL: {SUBJECT}"]
        with engine.connect() as connection:
            status, finished_at = connection.execute(
                select(CriticalMessage.status, CriticalMessage.finished_at)
            ).one()
        assert status == "sent" and receiver.released_at is not None
        assert finished_at.replace(tzinfo=UTC) >= receiver.released_at  # marked after the lock
        assert the_alert(engine).detail["notify"]["raised"]["channels"] == ["slack"]
    finally:
        engine.dispose()


def short_busy_timeout(connection: Any, record: Any) -> None:
    """A write waits 0.2 s for SQLite's lock, then fails (30 s in service)."""
    connection.execute("PRAGMA busy_timeout=200")
