"""Each critical message goes to each channel once: claimed before it is sent and marked after
(service.notify.critical), so neither a sender killed mid-send or between channels nor a
leader whose lock dropped while it sent makes the next sender repeat it. Real processes
killed with SIGKILL, a real SMTP server (aiosmtpd) and Slack receiver, SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from service.adapters.channels import build_channels
from service.config import Settings
from service.db import make_engine
from service.models.alerts import Alert, CriticalMessage
from service.notify.alerts import resolve_alert
from service.notify.critical import send_critical_alerts
from service.notify.critical_send import STALE_CLAIM
from service.notify.leader import NOTIFY_LOCK_KEY
from service.notify.message_store import MessageClaim, claim_message
from service.notify.retention import purge_expired
from service.notify.schedule import NotifyJobs
from service.runtime import Runtime
from tests.integration.notify_helpers import Mailbox, SlackReceiver, raise_gave_up, smtp_server
from tests.integration.test_lock_lost import terminate_lock_holder
from tests.servers import serve_wsgi

SUBJECT = "in/k.csv: the poller gave up"  # raise_gave_up's incident
SENDER = """
import sys
from service.adapters.channels import build_channels
from service.config import Settings
from service.db import make_engine
from service.notify.critical import send_critical_alerts
url, slack, smtp = sys.argv[1:4]
settings = Settings(_env_file=None, database_url=url, slack_webhook_url=slack, smtp_url=smtp,
                    digest_email_to="ops@example.com")
send_critical_alerts(make_engine(url), settings, build_channels(settings))
"""


@pytest.fixture
def slack() -> Iterator[tuple[SlackReceiver, str]]:
    receiver = SlackReceiver()
    with serve_wsgi(receiver) as server:
        yield receiver, f"{server.url}/services/T/B/X"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@contextmanager
def silent_smtp() -> Iterator[tuple[int, threading.Event]]:
    """An SMTP server that takes the connection and never greets: (its port, set once a
    client connected). The send waits there until its deadline."""
    listener = socket.create_server(("127.0.0.1", 0))
    connected, held = threading.Event(), []

    def accept() -> None:
        try:
            held.append(listener.accept()[0])
            connected.set()
        except OSError:  # closed at the end of the test
            pass

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1], connected
    finally:
        listener.close()
        for sock in held:
            sock.close()


def kill_sender_while(
    db_url: str, slack_url: str, smtp_port: int, waiting: threading.Event
) -> None:
    """Run one pass of the critical job in its own process and SIGKILL it once `waiting` is
    set (a channel's server holds its send)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    args = [sys.executable, "-c", SENDER, db_url, slack_url, f"smtp://127.0.0.1:{smtp_port}"]
    doomed = subprocess.Popen(args, env=env)
    try:
        assert waiting.wait(30), "the sender never reached the server"
        doomed.send_signal(signal.SIGKILL)
        assert doomed.wait(10) == -signal.SIGKILL
    finally:
        doomed.kill()


def the_alert(engine: Engine) -> Alert:
    with Session(engine) as session:
        return session.exec(select(Alert)).one()


def slack_texts(receiver: SlackReceiver) -> list[str]:
    return [str(body.get("text", "")) for body in receiver.bodies]


def mail_subjects(mailbox: Mailbox) -> list[str]:
    return [str(message["Subject"]) for _, _, message in mailbox.received]


def test_a_sender_killed_while_slack_held_its_message_sends_email_and_slack_once_more(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    slack: tuple[SlackReceiver, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The sender posted the incident to Slack (the receiver has it) and was SIGKILLed before
    Slack answered. Nothing said Slack had it, and the restarted sender posted it to Slack
    again at once. Now its claim stands: the restarted pass sends email only, and once the
    claim is older than a send may last Slack gets the message once more (it may have arrived:
    twice at most, logged), never a third time."""
    receiver, slack_url = slack
    raise_gave_up(engine)
    receiver.gate = gate = threading.Event()  # Slack holds the first POST unanswered
    with smtp_server() as (mailbox, port):
        try:
            kill_sender_while(db_url, slack_url, port, receiver.entered)
        finally:
            gate.set()
        settings = make_settings(
            database_url=db_url,
            slack_webhook_url=slack_url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            digest_email_to="ops@example.com",
        )
        now = datetime.now(UTC)
        with caplog.at_level(logging.INFO, logger="meterfix"):
            send_critical_alerts(engine, settings, build_channels(settings), clock=lambda: now)
            assert slack_texts(receiver) == [f"CRITICAL: {SUBJECT}"]  # the killed sender's
            assert mail_subjects(mailbox) == [f"[meterfix] CRITICAL: {SUBJECT}"]
            # Slack's claim may still be a send going on: the incident is not over yet
            assert the_alert(engine).notified_at is None
            for later in (now + timedelta(seconds=30), now + timedelta(minutes=2)):
                send_critical_alerts(
                    engine, settings, build_channels(settings), clock=lambda t=later: t
                )
            later = now + timedelta(minutes=10)
            send_critical_alerts(engine, settings, build_channels(settings), clock=lambda: later)
        assert slack_texts(receiver) == [f"CRITICAL: {SUBJECT}"] * 2  # the killed one, once more
        assert mail_subjects(mailbox) == [f"[meterfix] CRITICAL: {SUBJECT}"]
    alert = the_alert(engine)
    assert alert.notified_at is not None
    raised = alert.detail["notify"]["raised"]
    assert raised["channels"] == ["email", "slack"] and "unsure" not in raised, raised
    resent = [r.getMessage() for r in caplog.records if "alert.notify_resent" in r.getMessage()]
    assert len(resent) == 1 and "slack" in resent[0] and "mid-send" in resent[0], resent


def test_a_sender_killed_after_slack_and_during_email_never_sends_slack_again(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    slack: tuple[SlackReceiver, str],
) -> None:
    """The sender posted the incident to Slack (answered 200) and was SIGKILLed while its
    email waited for the SMTP server's greeting. Nothing said Slack had it: the restarted
    sender posted it to Slack again. Now Slack's message was marked sent before the email
    was claimed: the restart sends nothing to Slack; the email, claimed and cut off
    mid-send, is sent once more once the claim is older than a send may last (the SMTP
    server had not even greeted: recorded unsure and never sent, it was lost)."""
    receiver, slack_url = slack
    raise_gave_up(engine)
    with silent_smtp() as (silent_port, connected):
        kill_sender_while(db_url, slack_url, silent_port, connected)
    assert slack_texts(receiver) == [f"CRITICAL: {SUBJECT}"]
    with smtp_server() as (mailbox, port):  # SMTP answers again
        settings = make_settings(
            database_url=db_url,
            slack_webhook_url=slack_url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            digest_email_to="ops@example.com",
        )
        now = datetime.now(UTC)
        for later in (now, now + timedelta(minutes=2), now + timedelta(minutes=10)):
            send_critical_alerts(
                engine, settings, build_channels(settings), clock=lambda t=later: t
            )
        assert slack_texts(receiver) == [f"CRITICAL: {SUBJECT}"]
        assert mail_subjects(mailbox) == [f"[meterfix] CRITICAL: {SUBJECT}"]
    alert = the_alert(engine)
    raised = alert.detail["notify"]["raised"]
    assert alert.notified_at is not None
    assert raised["channels"] == ["email", "slack"] and "unsure" not in raised, raised


# --- two workers on PostgreSQL -------------------------------------------------------------


@pytest.fixture
def receivers(
    pg_url: str, make_settings: Callable[..., Settings], slack: tuple[SlackReceiver, str]
) -> Iterator[tuple[Settings, Mailbox, SlackReceiver]]:
    """Settings sending to a real SMTP server and a Slack receiver, on PostgreSQL."""
    receiver, url = slack
    with smtp_server() as (mailbox, port):
        settings = make_settings(
            database_url=pg_url,
            slack_webhook_url=url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            digest_email_to="ops@example.com",
        )
        yield settings, mailbox, receiver


@pytest.fixture
def workers(pg_url: str) -> Iterator[list[Engine]]:
    """Two workers' engines (two processes' worth of connections)."""
    engines = [make_engine(pg_url), make_engine(pg_url)]
    yield engines
    for engine in engines:
        engine.dispose()


def jobs_of(engine: Engine, settings: Settings) -> NotifyJobs:
    """A worker's notification jobs, as `meterfix worker` runs them (without the scheduler)."""
    return NotifyJobs(Runtime(settings, engine=engine), settings, build_channels(settings), "w")


def test_a_leader_whose_lock_dropped_mid_send_and_the_next_leader_send_slack_once(
    receivers: tuple[Settings, Mailbox, SlackReceiver], workers: list[Engine]
) -> None:
    """The first worker's pass was posting the incident to Slack (a slow Slack) when its
    lock's connection was terminated; the second worker, leading now, read the incident as
    not sent and posted it to Slack again. Now the first one's claim stands: the second
    sends the email only; the first, done with Slack, stops before the email (its lead
    lost); the next passes find both channels marked and record the incident sent."""
    settings, mailbox, receiver = receivers
    raise_gave_up(workers[0])
    first, second = (jobs_of(engine, settings) for engine in workers)
    receiver.gate = gate = threading.Event()
    leader = threading.Thread(target=first.critical)
    leader.start()
    try:
        assert receiver.entered.wait(30), "the first pass did not post to Slack"
        terminate_lock_holder(workers[0], NOTIFY_LOCK_KEY, ":meterfix.critical")
        second.critical()  # leads now
        assert mail_subjects(mailbox) == [f"[meterfix] CRITICAL: {SUBJECT}"]
    finally:
        gate.set()
        leader.join(30)
    for jobs in (first, second, first):  # the next passes, whoever leads
        jobs.critical()
    assert slack_texts(receiver) == [f"CRITICAL: {SUBJECT}"]
    assert mail_subjects(mailbox) == [f"[meterfix] CRITICAL: {SUBJECT}"]
    alert = the_alert(workers[0])
    assert alert.notified_at is not None
    assert alert.detail["notify"]["raised"]["channels"] == ["email", "slack"]


def test_two_senders_at_once_send_each_channel_once(
    receivers: tuple[Settings, Mailbox, SlackReceiver], workers: list[Engine]
) -> None:
    """Two passes at the same moment, each on its own connections, neither waiting for a
    lock (`meterfix worker` takes one; the claims must hold without it): both read the
    incident as due and each sent it on both channels. Now each channel's message is
    claimed by one of them only."""
    settings, mailbox, receiver = receivers
    raise_gave_up(workers[0])
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def send(engine: Engine) -> None:
        start.wait()
        try:
            send_critical_alerts(engine, settings, build_channels(settings))
        except BaseException as exc:  # the test's thread: reported below
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(engine,)) for engine in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    later = datetime.now(UTC) + timedelta(seconds=10)
    for engine in workers:  # the passes after: nothing to send again
        send_critical_alerts(engine, settings, build_channels(settings), clock=lambda t=later: t)
    assert slack_texts(receiver) == [f"CRITICAL: {SUBJECT}"]
    assert mail_subjects(mailbox) == [f"[meterfix] CRITICAL: {SUBJECT}"]
    assert the_alert(workers[0]).detail["notify"]["raised"]["channels"] == ["email", "slack"]


def test_an_incident_raised_again_is_sent_again_and_retention_takes_its_claims(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    slack: tuple[SlackReceiver, str],
) -> None:
    """The claims are per incident: one resolved and raised again is claimed and sent again
    (raised, resolved, raised), and an alert purged by retention takes its claims with it."""
    receiver, slack_url = slack
    settings = make_settings(database_url=db_url, slack_webhook_url=slack_url)
    now = datetime.now(UTC)

    def send_twice() -> None:
        for later in (now, now + timedelta(minutes=5)):
            send_critical_alerts(
                engine, settings, build_channels(settings), clock=lambda t=later: t
            )

    raise_gave_up(engine)
    send_twice()
    assert resolve_alert(engine, "poller.gave_up:k")
    send_twice()
    raise_gave_up(engine)  # a new incident of the same thing
    send_twice()
    headlines = [text.split(",")[0] for text in slack_texts(receiver)]
    assert headlines == [f"CRITICAL: {SUBJECT}", f"Resolved: {SUBJECT}", f"CRITICAL: {SUBJECT}"]
    with engine.connect() as connection:
        claims = connection.execute(select(CriticalMessage.phase, CriticalMessage.status)).all()
    assert sorted(claims) == [("raised", "sent"), ("resolved", "sent")]
    assert resolve_alert(engine, "poller.gave_up:k")
    purge_expired(engine, settings.mfx_retention_days, now=now + timedelta(days=400))
    with engine.connect() as connection:
        assert connection.execute(select(CriticalMessage.id)).all() == []
        assert connection.execute(select(Alert.id)).all() == []


def test_a_message_whose_senders_die_mid_send_twice_is_sent_twice_at_most(engine: Engine) -> None:
    """A claim left `sending` past its time is taken over once (the message may not have
    arrived: sent once more), and when that sender too stops mid-send it is marked unsure:
    never a third send, however many passes follow."""
    raise_gave_up(engine)
    with engine.connect() as connection:
        alert = connection.execute(select(Alert.id, Alert.created_at)).one()._asdict()
    t0 = datetime.now(UTC)

    def claim(who: str, at: datetime) -> MessageClaim:
        stale_before = at - STALE_CLAIM
        return claim_message(
            engine, alert, "raised", "slack", who, now=at, stale_before=stale_before
        )

    first = claim("a", t0)
    assert first.ours and not first.resent
    assert not claim("b", t0 + timedelta(seconds=30)).ours  # a's send may still be going on
    again = claim("b", t0 + timedelta(minutes=2))
    assert again.ours and again.resent
    third = claim("c", t0 + timedelta(minutes=4))
    assert (third.ours, third.status, third.made_unsure) == (False, "unsure", True)
    later = claim("d", t0 + timedelta(hours=1))
    assert (later.ours, later.status, later.made_unsure) == (False, "unsure", False)
    with engine.connect() as connection:
        row = connection.execute(select(CriticalMessage.resends, CriticalMessage.status)).one()
    assert tuple(row) == (1, "unsure")


def test_each_claim_is_dated_when_it_is_made(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    slack: tuple[SlackReceiver, str],
) -> None:
    """The pass read its clock once and dated every channel's claim with it: an email claimed
    after a Slack send of 60 s was dated 60 s early, so another sender took it for abandoned
    30 s into its send and sent it again. Each claim is dated when it is made."""
    receiver, slack_url = slack
    raise_gave_up(engine)
    t0 = datetime.now(UTC)
    with smtp_server() as (mailbox, port):
        settings = make_settings(
            database_url=db_url,
            slack_webhook_url=slack_url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            digest_email_to="ops@example.com",
        )

        def clock() -> datetime:  # Slack's send took a minute
            return t0 + timedelta(seconds=60 if receiver.bodies else 0)

        send_critical_alerts(engine, settings, build_channels(settings), clock=clock)
        assert mail_subjects(mailbox) == [f"[meterfix] CRITICAL: {SUBJECT}"]
    with engine.connect() as connection:
        claims = connection.execute(
            select(CriticalMessage.channel, CriticalMessage.claimed_at)
        ).all()
    dated = {channel: at.replace(tzinfo=UTC) if at.tzinfo is None else at for channel, at in claims}
    assert dated == {"slack": t0, "email": t0 + timedelta(seconds=60)}, dated
