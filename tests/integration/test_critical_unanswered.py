"""A critical message whose send went out and got no answer may have arrived: the send stops
there, and the message is sent once more at most (service.notify.critical, the senders'
`MaybeDelivered`). Its claims say so to whoever reads them: the "resolved" message follows a
"raised" one that may have arrived, and a sender between its tries sends nothing once the
incident is closed. Real Slack receivers (a socket server that reads a request whole and
closes without answering) and SMTP servers (aiosmtpd), SQLite and PostgreSQL. Each test
failed on the code before its fix (its docstring says what was seen)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from service.adapters.channels import BetweenTries, Message
from service.adapters.slack import ATTEMPTS as SLACK_TRIES
from service.adapters.slack import SlackChannel
from service.adapters.smtp import EmailChannel, SmtpTarget
from service.config import Settings
from service.db import make_engine
from service.db.locks import HeldLock, LockLost
from service.models.alerts import Alert, CriticalMessage, DigestRun
from service.notify import digests
from service.notify.alerts import resolve_alert
from service.notify.critical import MAX_ATTEMPTS, send_critical_alerts
from service.notify.digests import DigestSender
from tests.integration.notify_helpers import (
    NOW,
    Mailbox,
    SlackReceiver,
    raise_gave_up,
    seed_activity,
)
from tests.integration.test_critical_retry_wait import read_request, serving
from tests.servers import serve_wsgi

SUBJECT = "in/k.csv: the poller gave up"  # raise_gave_up's incident
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
E503 = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\nerror"


class Killed(BaseException):
    """The sender's process stopped (SIGKILL): nothing after it runs in that pass."""


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@contextmanager
def scripted(answers: list[bytes | None]) -> Iterator[tuple[str, list[tuple[bytes, bytes]]]]:
    """A Slack webhook that reads each request whole and gives the next of `answers` (None:
    closes without answering, Slack may have posted it): its URL, and each request's body
    with the answer it had (b"" for none)."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[tuple[bytes, bytes]] = []

    def serve() -> None:
        for answer in answers:
            try:
                connection = listener.accept()[0]
            except OSError:  # closed at the end of the test
                return
            with connection:
                body = read_request(connection)
                seen.append((body, answer or b""))
                if answer is not None:
                    connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/services/T/B/X", seen
    finally:
        listener.close()
        thread.join(5)


def may_have_posted(seen: list[tuple[bytes, bytes]], text: str) -> int:
    """How many requests carrying `text` Slack may have posted (all but those it refused)."""
    return sum(1 for body, answer in seen if text.encode() in body and b" 503 " not in answer)


def claim(engine: Engine) -> tuple[str, int]:
    with engine.connect() as connection:
        query = select(CriticalMessage.status, CriticalMessage.resends).where(
            CriticalMessage.phase == "raised"
        )
        status, resends = connection.execute(query).one()
        return str(status), int(resends)


def the_alert(engine: Engine) -> Alert:
    with Session(engine) as session:
        return session.exec(select(Alert)).one()


def one_pass(
    engine: Engine,
    settings: Settings,
    channel: Any,
    at: datetime,
    lock: HeldLock | None = None,
) -> None:
    """One pass of the critical job at `at`; a sender killed in it (`Killed`) is over."""
    with_lock = {} if lock is None else {"lock": lock}
    with suppress(Killed):
        send_critical_alerts(engine, settings, [channel], clock=lambda: at, **with_lock)


def killed_in_a_wait_after_a_refusal(engine: Engine) -> Callable[[float], None]:
    """A sender's wait between tries: it is stopped there when its claim says the try
    before failed (a worker's grace is shorter than the wait)."""

    def sleep(seconds: float) -> None:
        if claim(engine)[0] == "failed":
            raise Killed()

    return sleep


class DiesAfterSend:
    """A sender whose process dies once its send is over, before it marks it."""

    name = "slack"

    def __init__(self, inner: SlackChannel) -> None:
        self.inner = inner

    def send(self, message: Message, between_tries: BetweenTries | None = None) -> None:
        self.inner.send(message, between_tries)
        raise Killed()


def no_wait(seconds: float) -> None:
    """A send's wait between tries, over at once."""


def test_a_try_unanswered_then_a_refused_one_is_not_sent_three_times(
    engine: Engine, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """A's first try reached Slack whole and had no answer (Slack may have posted it), its
    second was refused (503): the claim was marked failed for the wait, forgetting the first,
    and A was stopped in that wait. B took the failed claim as a fresh send, posted it and
    was stopped before marking it; C sent it once more as a send cut off: posted three
    times. Now A stops at its unanswered try, its claim saying it may have arrived: B sends
    it once more (refused once, then posted) and is stopped; C marks it unsure: it may have
    reached Slack twice, never three times."""
    raise_gave_up(engine)
    t0 = datetime.now(UTC)
    with scripted([None, E503, OK, OK, OK]) as (url, seen):
        settings = make_settings(database_url=str(engine.url), slack_webhook_url=url)
        a = SlackChannel(url, sleep=killed_in_a_wait_after_a_refusal(engine))
        with caplog.at_level(logging.INFO, logger="meterfix"):
            one_pass(engine, settings, a, t0)
            b = DiesAfterSend(SlackChannel(url, sleep=no_wait))
            one_pass(engine, settings, b, t0 + timedelta(minutes=5))
            c = SlackChannel(url, sleep=no_wait)
            one_pass(engine, settings, c, t0 + timedelta(minutes=10))
            one_pass(engine, settings, c, t0 + timedelta(minutes=60))
    assert may_have_posted(seen, f"CRITICAL: {SUBJECT}") == 2, seen
    assert [answer[:12] for _, answer in seen] == [b"", b"HTTP/1.1 503", b"HTTP/1.1 200"]
    assert claim(engine) == ("unsure", 1)
    alert = the_alert(engine)
    assert alert.notified_at is not None
    assert alert.detail["notify"]["raised"]["unsure"] == ["slack"]
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "alert.notify_unanswered" in said and "alert.notify_unsure" in said


def test_a_server_that_never_answers_has_the_message_twice_at_most(
    engine: Engine, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """Slack took every POST whole and never answered (the connection closed after the
    body), no sender stopped: each send tried four times, each pass sent it again, 12 POSTs
    in three passes. Now a send ends at its first unanswered try, the next pass sends it
    once more, that one unanswered too marks it unsure: two POSTs, the alert's progress
    saying Slack may have it."""
    raise_gave_up(engine)
    t0 = datetime.now(UTC)
    with scripted([None] * 40) as (url, seen):
        settings = make_settings(database_url=str(engine.url), slack_webhook_url=url)
        channel = SlackChannel(url, sleep=no_wait)
        with caplog.at_level(logging.INFO, logger="meterfix"):
            for minutes in (0, 30, 60, 90):
                one_pass(engine, settings, channel, t0 + timedelta(minutes=minutes))
    assert len(seen) == 2 and all(f"CRITICAL: {SUBJECT}".encode() in b for b, _ in seen)
    assert claim(engine) == ("unsure", 1)
    alert = the_alert(engine)
    assert alert.notified_at is not None
    assert alert.detail["notify"]["raised"]["unsure"] == ["slack"]
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "alert.notify_unanswered" in m]) == 1, said
    assert len([m for m in said if "alert.notify_resent" in m]) == 1, said
    assert len([m for m in said if "alert.notify_unsure" in m]) == 1, said


def test_a_gateway_timeout_is_taken_for_a_message_that_may_have_arrived(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """A proxy in front of Slack answered 504 (it passed the POST on and had no answer):
    taken for a refusal, the message was posted again on each of four tries of every pass.
    Now a 504 (or 502) ends the send as one that may have arrived: two POSTs in all."""
    raise_gave_up(engine)
    receiver = SlackReceiver()
    receiver.answers = [("504 Gateway Timeout", [])] * 40
    t0 = datetime.now(UTC)
    with serve_wsgi(receiver) as server:
        url = f"{server.url}/services/T/B/X"
        settings = make_settings(database_url=str(engine.url), slack_webhook_url=url)
        for minutes in (0, 30, 60):
            channel = SlackChannel(url, sleep=no_wait)
            one_pass(engine, settings, channel, t0 + timedelta(minutes=minutes))
    assert [body["text"] for body in receiver.bodies] == [f"CRITICAL: {SUBJECT}"] * 2
    assert claim(engine) == ("unsure", 1)


def test_resolved_follows_a_raised_message_sent_without_answer_then_refused(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """A's first try reached Slack and had no answer (Slack posted the CRITICAL), its second
    was refused (503), the claim marked failed for the wait, and A was stopped. The incident
    was resolved: the next pass read the failed claim as never told and closed the alert's
    messages: no "resolved" ever followed the CRITICAL on Slack. Now the claim says it may
    have arrived, and the "resolved" message goes to Slack."""
    raise_gave_up(engine)
    t0 = datetime.now(UTC)
    with scripted([None, E503, OK, OK]) as (url, seen):
        settings = make_settings(database_url=str(engine.url), slack_webhook_url=url)
        a = SlackChannel(url, sleep=killed_in_a_wait_after_a_refusal(engine))
        one_pass(engine, settings, a, t0)
        with engine.begin() as connection:
            resolve_alert(connection, "poller.gave_up:k")
        for minutes in (5, 10, 20):
            one_pass(
                engine, settings, SlackChannel(url, sleep=no_wait), t0 + timedelta(minutes=minutes)
            )
    texts = [body for body, _ in seen]
    assert may_have_posted(seen, f"CRITICAL: {SUBJECT}") == 1, seen
    assert [t for t in texts if b"RESOLVED" in t.upper()], texts
    alert = the_alert(engine)
    assert alert.resolved_notified_at is not None
    assert alert.detail["notify"]["resolved"]["channels"] == ["slack"]


def test_resolved_follows_a_raised_message_resent_then_refused(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """A posted the CRITICAL and was stopped before marking it; B sent it once more, Slack
    answered 503 and B was stopped in its wait, the claim marked failed. The incident was
    resolved, and the next pass read the failed claim as never told: no "resolved" message
    followed the CRITICAL A posted. Now a claim sent again may have arrived, whatever its
    status: the "resolved" message goes to Slack."""
    raise_gave_up(engine)
    t0 = datetime.now(UTC)
    with scripted([OK, E503, OK, OK]) as (url, seen):
        settings = make_settings(database_url=str(engine.url), slack_webhook_url=url)
        one_pass(engine, settings, DiesAfterSend(SlackChannel(url, sleep=no_wait)), t0)
        b = SlackChannel(url, sleep=killed_in_a_wait_after_a_refusal(engine))
        one_pass(engine, settings, b, t0 + timedelta(minutes=5))
        assert claim(engine) == ("failed", 1)
        with engine.begin() as connection:
            resolve_alert(connection, "poller.gave_up:k")
        for minutes in (10, 20):
            one_pass(
                engine, settings, SlackChannel(url, sleep=no_wait), t0 + timedelta(minutes=minutes)
            )
    texts = [body for body, _ in seen]
    assert len(texts) == 3 and b"RESOLVED" in texts[2].upper(), texts
    assert claim(engine)[0] == "given_up"  # closed: not sent by anyone any more
    assert the_alert(engine).detail["notify"]["resolved"]["channels"] == ["slack"]


def test_resolved_follows_a_raised_message_unanswered_then_refused_until_given_up(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """The CRITICAL went out to Slack without an answer (it may have arrived), and Slack
    refused its one more send (503) on every attempt until they ran out: the raised phase
    ended with Slack in none of its lists, and when the incident was resolved no "resolved"
    message was sent to Slack. Now its claims count too: a claim sent again may have
    arrived, and the "resolved" message goes to Slack."""
    raise_gave_up(engine)
    t0 = datetime.now(UTC)
    refusals = [E503] * SLACK_TRIES * (MAX_ATTEMPTS - 1)  # every try of every attempt left
    with scripted([None, *refusals, OK]) as (url, seen):
        settings = make_settings(database_url=str(engine.url), slack_webhook_url=url)
        channel = SlackChannel(url, sleep=no_wait)
        for hours in range(MAX_ATTEMPTS + 1):
            one_pass(engine, settings, channel, t0 + timedelta(hours=hours))
        alert = the_alert(engine)
        assert alert.notified_at is not None and "unsure" not in alert.detail["notify"]["raised"]
        assert claim(engine) == ("failed", 1)
        with engine.begin() as connection:
            resolve_alert(connection, "poller.gave_up:k")
        one_pass(engine, settings, channel, t0 + timedelta(hours=MAX_ATTEMPTS + 1))
        resolved = [body for body, _ in seen if b"RESOLVED" in body.upper()]
    assert may_have_posted(seen, f"CRITICAL: {SUBJECT}") == 1
    assert len(resolved) == 1, [body[:40] for body, _ in seen]
    assert the_alert(engine).detail["notify"]["resolved"]["channels"] == ["slack"]


class Lead(HeldLock):
    """A notify leader lock that a test takes away (`lost`), as a dropped connection does."""

    def __init__(self) -> None:
        super().__init__(True, "notify")
        self.lost = False

    def held(self) -> bool:
        return not self.lost


@pytest.mark.parametrize("knows", [True, False], ids=["lock-checked", "lock-check-raced"])
def test_a_sender_that_lost_its_lead_in_a_wait_sends_nothing_after_the_close(
    engine: Engine, make_settings: Callable[..., Settings], knows: bool
) -> None:
    """A's try was refused (503) and A waited for its next, its claim failed; its lead was
    lost meanwhile (its connection dropped), the incident was resolved and the next leader
    closed the raised message as never told. A, still alive, took its claim back and posted
    the CRITICAL: Slack had "raised" and never "resolved". Now A asks its lock before its
    next try (LockLost), and when that answer came before the close (`lock-check-raced`),
    the close has given the failed claim up: A cannot take it back, and stops."""
    raise_gave_up(engine)
    t0 = datetime.now(UTC)
    lead = Lead()
    with scripted([E503, OK, OK]) as (url, seen):
        settings = make_settings(database_url=str(engine.url), slack_webhook_url=url)

        def wait(seconds: float) -> None:  # the lead lost, the next leader's pass runs
            lead.lost = knows
            with engine.begin() as connection:
                resolve_alert(connection, "poller.gave_up:k")
            later = t0 + timedelta(minutes=1)
            one_pass(engine, settings, SlackChannel(url, sleep=no_wait), later)

        a = SlackChannel(url, sleep=wait)
        if knows:
            with pytest.raises(LockLost):
                send_critical_alerts(engine, settings, [a], clock=lambda: t0, lock=lead)
        else:
            send_critical_alerts(engine, settings, [a], clock=lambda: t0, lock=lead)
    assert [answer[:12] for _, answer in seen] == [b"HTTP/1.1 503"], seen
    assert claim(engine)[0] == "given_up"
    alert = the_alert(engine)
    assert alert.notified_at is not None and alert.resolved_notified_at is not None


def test_a_claim_taken_back_after_a_long_wait_is_dated_anew(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """A's try was refused and its wait, with the marks around it, lasted 80 s (the marks
    wait on a locked SQLite database); taken back, its claim kept its first date, so during
    A's next try it looked abandoned (older than STALE_CLAIM, 90 s) to another sender, which
    posted it too: twice without any sender stopping. Now it is dated when taken back."""
    raise_gave_up(engine)
    t0 = datetime.now(UTC)
    clock = [t0]
    receiver = SlackReceiver()
    receiver.answers = [("503 Service Unavailable", [])]
    with serve_wsgi(receiver) as server:
        url = f"{server.url}/services/T/B/X"
        settings = make_settings(database_url=str(engine.url), slack_webhook_url=url)

        class OtherSenderInTheNextTry:
            """A's channel: as A's next try starts, another sender's pass runs."""

            name = "slack"

            def __init__(self) -> None:
                self.inner = SlackChannel(url, sleep=self.wait)

            def wait(self, seconds: float) -> None:
                clock[0] = t0 + timedelta(seconds=80)

            def send(self, message: Message, between_tries: BetweenTries | None = None) -> None:
                assert between_tries is not None
                outer, claimed = self, between_tries

                class Then:
                    def failed(self, reason: str) -> None:
                        claimed.failed(reason)

                    def retrying(self) -> None:
                        claimed.retrying()
                        later = t0 + timedelta(seconds=95)
                        one_pass(engine, settings, SlackChannel(url, sleep=no_wait), later)

                outer.inner.send(message, Then())

        send_critical_alerts(engine, settings, [OtherSenderInTheNextTry()], clock=lambda: clock[0])
    assert [body["text"] for body in receiver.bodies] == [f"CRITICAL: {SUBJECT}"] * 2  # 503, one
    assert claim(engine) == ("sent", 0)


class NoAnswerToData(Mailbox):
    """An SMTP server that takes the message and drops the connection before answering
    DATA's end (a server restarting, a connection cut): the email arrived, unanswered."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await super().handle_DATA(server, session, envelope)
        server.transport.abort()
        return "250 OK"


def test_an_email_taken_without_an_answer_is_sent_twice_at_most(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """The SMTP server took each email and dropped the connection before answering DATA's
    end: the send tried three times (three emails), and every pass sent three more. Now a
    send ends there (the email may have been taken), the next pass sends it once more and
    marks it unsure: two emails."""
    raise_gave_up(engine)
    mailbox = NoAnswerToData()
    t0 = datetime.now(UTC)
    with serving(mailbox) as port:
        settings = make_settings(
            database_url=str(engine.url),
            smtp_url=f"smtp://127.0.0.1:{port}",
            digest_email_to="ops@example.com",
        )
        target = SmtpTarget.parse(settings.smtp_url)
        email = EmailChannel(target, "meterfix@example.com", ["ops@example.com"], sleep=no_wait)
        for minutes in (0, 30, 60):
            one_pass(engine, settings, email, t0 + timedelta(minutes=minutes))
    assert [str(m["Subject"]) for _, _, m in mailbox.received] == [
        f"[meterfix] CRITICAL: {SUBJECT}"
    ] * 2
    assert claim(engine) == ("unsure", 1)
    assert the_alert(engine).detail["notify"]["raised"]["unsure"] == ["email"]


def test_an_email_refused_before_data_is_still_tried_again_in_the_send(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """A connection dropped before DATA (here: before the greeting) delivered nothing: the
    send still tries again after its wait, and the email goes once, marked sent (a guard:
    only a failure once DATA began ends the send)."""
    raise_gave_up(engine)
    mailbox = Mailbox()
    listener = socket.create_server(("127.0.0.1", 0))  # drops the first connection unanswered

    with serving(mailbox) as port:
        real = port

        def drop_first() -> None:
            connection = listener.accept()[0]
            connection.close()

        thread = threading.Thread(target=drop_first, daemon=True)
        thread.start()
        settings = make_settings(
            database_url=str(engine.url),
            smtp_url=f"smtp://127.0.0.1:{real}",
            digest_email_to="ops@example.com",
        )
        target = SmtpTarget.parse(f"smtp://127.0.0.1:{listener.getsockname()[1]}")
        tries: list[float] = []

        def wait(seconds: float) -> None:  # the next try goes to the real server
            tries.append(seconds)
            email.target = SmtpTarget.parse(f"smtp://127.0.0.1:{real}")

        email = EmailChannel(target, "meterfix@example.com", ["ops@example.com"], sleep=wait)
        one_pass(engine, settings, email, datetime.now(UTC))
        thread.join(5)
    listener.close()
    assert len(tries) == 1
    assert [str(m["Subject"]) for _, _, m in mailbox.received] == [
        f"[meterfix] CRITICAL: {SUBJECT}"
    ]
    assert claim(engine) == ("sent", 0)


def test_a_digest_posted_without_an_answer_is_not_posted_again_in_the_same_send(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """Slack took the digest's POST whole and never answered: the send posted it four times
    in one go, each possibly arriving. Now the send stops at the first: the window is
    failed with the reason and tried again after its backoff, one POST per attempt."""
    seed_activity(engine)
    with scripted([None] * 10) as (url, seen):
        settings = make_settings(database_url=str(engine.url), slack_webhook_url=url)
        channel = SlackChannel(url, sleep=no_wait)
        [outcome] = DigestSender(
            engine, settings, [channel], instance="t", clock=lambda: NOW
        ).tick()
    assert outcome.status == "failed" and "sent, no answer" in outcome.reason
    assert len(seen) == 1
    with Session(engine) as session:
        [row] = session.exec(select(DigestRun)).all()
    assert (row.status, row.attempts) == ("failed", 1) and row.next_attempt_at is not None


def test_a_digest_whose_later_part_is_refused_posts_its_first_part_twice_at_most(
    engine: Engine, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A digest of two Slack messages (one past 50 blocks), the first posted (200), the
    second refused (503) on every try: the send failed as nothing delivered, and the window
    was sent again at each backoff, the first part posted each time (8 times over a day).
    Now a part refused after one posted is a send that may have arrived: the window is sent
    once more, then unsure, its first part posted twice at most."""
    seed_activity(engine)
    two_parts = Message(
        subject="digest", text="t", html="<p>t</p>", slack=[{"text": "PART0"}, {"text": "PART1"}]
    )  # the rendering is not what is tested: the parts' posting is
    monkeypatch.setattr(digests, "render_digest", lambda digest, now: two_parts)
    with scripted(([OK] + [E503] * SLACK_TRIES) * 8) as (url, seen):
        settings = make_settings(database_url=str(engine.url), slack_webhook_url=url)
        channel = SlackChannel(url, sleep=no_wait)
        for hour in range(0, 30, 2):  # past every backoff
            at = NOW + timedelta(hours=hour)
            DigestSender(engine, settings, [channel], instance="t", clock=lambda at=at: at).tick()
    assert sum(1 for body, answer in seen if answer == OK and b"PART0" in body) == 2
    with Session(engine) as session:
        row, *later = session.exec(select(DigestRun).order_by(DigestRun.window_start)).all()
    assert [later_row.status for later_row in later] == ["empty"] * len(later)
    assert row.status == "unsure" and row.next_attempt_at is None
    assert "part 2 of 2 not posted" in (row.last_error or "")
    assert "HTTP 503" in (row.last_error or "")
