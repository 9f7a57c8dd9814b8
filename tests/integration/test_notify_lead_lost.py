"""The notify lead lost with its lock's connection (PostgreSQL restarted or failed over, an
idle timeout; here `pg_terminate_backend`) while a pass sent: another worker takes the lock
and leads the next pass. The first learns it before its next send, sends nothing more and
records nothing; every critical message and digest goes out once, on the real SMTP server
and Slack receiver."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from service.adapters.channels import build_channels
from service.config import Settings
from service.db import make_engine
from service.models.alerts import Alert, DigestRun
from service.notify import critical, digests
from service.notify.alerts import raise_alert
from service.notify.leader import NOTIFY_LOCK_KEY
from service.notify.schedule import NotifyJobs
from service.runtime import Runtime
from tests.integration.notify_helpers import NOW, Mailbox, SlackReceiver, seed_activity, smtp_server
from tests.integration.test_lock_lost import terminate_lock_holder
from tests.servers import serve_wsgi

CRITICAL, DIGEST = ":meterfix.critical", ":meterfix.digest"


@pytest.fixture
def receivers(
    pg_url: str, make_settings: Callable[..., Settings]
) -> Iterator[tuple[Settings, Mailbox, SlackReceiver]]:
    """Settings sending to a real SMTP server and a Slack receiver, on PostgreSQL."""
    slack = SlackReceiver()
    with serve_wsgi(slack) as server, smtp_server() as (mailbox, port):
        settings = make_settings(
            database_url=pg_url,
            slack_webhook_url=f"{server.url}/services/T/B/X",
            smtp_url=f"smtp://127.0.0.1:{port}",
            digest_email_to="ops@example.com",
        )
        yield settings, mailbox, slack


@pytest.fixture
def workers(pg_url: str) -> Iterator[list[Engine]]:
    """Two workers' engines (two processes' worth of connections)."""
    engines = [make_engine(pg_url), make_engine(pg_url)]
    yield engines
    for engine in engines:
        engine.dispose()


def jobs_of(engine: Engine, settings: Settings, instance: str) -> NotifyJobs:
    """A worker's notification jobs, as `meterfix worker` runs them (without the scheduler)."""
    runtime = Runtime(settings, engine=engine)
    return NotifyJobs(runtime, settings, build_channels(settings), instance)


def pause_once(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str, call: int
) -> tuple[threading.Event, threading.Event]:
    """`module.name`'s `call`-th call (counted from 1) waits before it runs: (set when it
    waits, set to let it go on); the calls after it do not."""
    paused, go_on = threading.Event(), threading.Event()
    original, calls = getattr(module, name), [0]

    def pausing(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            paused.set()
            assert go_on.wait(60)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, pausing)
    return paused, go_on


def raise_critical(engine: Engine, n: int) -> None:
    raise_alert(
        engine,
        key=f"lead.test.{n}",
        severity="critical",
        kind="lead.test",
        subject=f"incident {n}",
        message=f"the details of incident {n}",
    )


def subjects(mailbox: Mailbox, slack: SlackReceiver) -> tuple[list[str], list[str]]:
    """What each channel received: the mails' subjects, the Slack bodies' texts."""
    mails = sorted(str(message["Subject"]) for _, _, message in mailbox.received)
    texts = sorted(str(body.get("text", "")) for body in slack.bodies)
    return mails, texts


def test_a_critical_alert_goes_out_once_when_the_first_leaders_lock_dropped_mid_pass(
    receivers: tuple[Settings, Mailbox, SlackReceiver],
    workers: list[Engine],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two critical incidents due. The first worker's pass sent the first on both channels;
    its lock's connection was then terminated, and the second worker's pass, leading now,
    sent the second. The first pass went on from the rows it had read: the second incident
    went out twice on each channel. Now it learns before that send that it no longer leads,
    sends nothing more, and says so; the passes after send nothing again."""
    settings, mailbox, slack = receivers
    for n in (1, 2):
        raise_critical(workers[0], n)
    first, second = (jobs_of(e, settings, f"w{i}") for i, e in enumerate(workers))
    paused, go_on = pause_once(monkeypatch, critical, "render_alert", call=2)
    leader = threading.Thread(target=first.critical)
    with caplog.at_level(logging.INFO, logger="meterfix"):
        leader.start()
        try:
            assert paused.wait(30), "the first pass did not reach the second incident"
            terminate_lock_holder(workers[0], NOTIFY_LOCK_KEY, CRITICAL)
            second.critical()  # leads now: sends the second incident
        finally:
            go_on.set()
            leader.join(30)
        first.critical()  # the next passes, whoever leads: nothing left to send
        second.critical()
    mails, texts = subjects(mailbox, slack)
    assert len(mails) == 2 and len(texts) == 2, (mails, texts)
    assert ["incident 1" in m for m in mails].count(True) == 1, mails
    assert ["incident 2" in m for m in mails].count(True) == 1, mails
    assert ["incident 2" in t for t in texts].count(True) == 1, texts
    with Session(workers[0]) as session:
        alerts = session.exec(select(Alert).order_by(Alert.id)).all()
    assert [a.notified_at is not None for a in alerts] == [True, True]
    assert [sorted(a.detail["notify"]["raised"]["channels"]) for a in alerts] == [
        ["email", "slack"],
        ["email", "slack"],
    ]
    lost = [r.getMessage() for r in caplog.records if "notify.lead_lost" in r.getMessage()]
    assert len(lost) == 1 and CRITICAL in lost[0] and "was lost" in lost[0], lost


def test_a_send_recorded_as_the_lock_dropped_is_read_by_the_next_leader(
    receivers: tuple[Settings, Mailbox, SlackReceiver],
    workers: list[Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first worker sent an incident and was recording it when its lock's connection was
    terminated; the second worker's pass read the incident as not sent yet and sent it
    again. Now the record is fenced: the second leader waits for it to commit (or fail)
    before it reads, and finds the incident sent; the first sends nothing more."""
    settings, mailbox, slack = receivers
    for n in (1, 2):
        raise_critical(workers[0], n)
    first, second = (jobs_of(e, settings, f"w{i}") for i, e in enumerate(workers))
    paused, go_on = pause_once(monkeypatch, critical, "record_notification", call=1)
    leader = threading.Thread(target=first.critical)
    leader.start()
    took = threading.Thread(target=second.critical)
    try:
        assert paused.wait(30), "the first pass did not record the first incident"
        terminate_lock_holder(workers[0], NOTIFY_LOCK_KEY, CRITICAL)
        took.start()
        took.join(1.5)
        assert took.is_alive(), "the next leader read before the fenced record committed"
        go_on.set()
        leader.join(30)
        took.join(30)
    finally:
        go_on.set()
    first.critical()
    second.critical()
    mails, texts = subjects(mailbox, slack)
    assert len(mails) == 2 and len(texts) == 2, (mails, texts)
    assert ["incident 1" in m for m in mails].count(True) == 1, mails
    assert ["incident 2" in m for m in mails].count(True) == 1, mails


def test_a_digest_leader_whose_lock_dropped_hands_its_window_to_the_next_pass(
    receivers: tuple[Settings, Mailbox, SlackReceiver],
    workers: list[Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first worker's digest pass claimed a channel's window and was about to send it
    when its lock's connection was terminated; the second worker's pass found the window
    claimed. The first then sent it, leading no more. Now it learns before the send that
    it lost the lead, sends nothing, hands its claim back, and the next pass (the second
    worker leads it) sends the window: once on each channel."""
    settings, mailbox, slack = receivers
    seed_activity(workers[0])
    first, second = (jobs_of(e, settings, f"w{i}") for i, e in enumerate(workers))
    for jobs in (first, second):
        jobs.digests.clock = lambda: NOW
    paused, go_on = pause_once(monkeypatch, digests, "render_digest", call=2)
    leader = threading.Thread(target=first.digest)
    leader.start()
    try:
        assert paused.wait(30), "the first pass did not reach its second channel"
        terminate_lock_holder(workers[0], NOTIFY_LOCK_KEY, DIGEST)
        second.digest()  # the window is claimed by the first: not sent
        sent_before = len(mailbox.received) + len(slack.bodies)
    finally:
        go_on.set()
        leader.join(30)
    assert len(mailbox.received) + len(slack.bodies) == sent_before == 1
    second.digest()  # the next pass: the window handed back is sent
    first.digest()
    assert len(mailbox.received) == 1 and len(slack.bodies) == 1
    with Session(workers[0]) as session:
        rows = session.exec(select(DigestRun).order_by(DigestRun.channel)).all()
    assert [(r.channel, r.status, r.attempts) for r in rows] == [
        ("email", "sent", 1),
        ("slack", "sent", 1),
    ]
