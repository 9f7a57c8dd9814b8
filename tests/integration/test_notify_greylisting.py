"""An SMTP server that greylists (`450 4.2.0 Greylisted` to every RCPT of a first try, 250
on a later one), against a real aiosmtpd server: the refusal is temporary, so the digest
and critical alerts are retried (README "Digests and alerts"), never failed for good."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine
from sqlmodel import Session, select

from service.adapters.smtp import EmailChannel, SmtpTarget
from service.models.alerts import Alert, DigestRun
from service.notify.alerts import NOTIFY_STATE
from service.notify.critical import send_critical_alerts
from service.notify.digests import DigestSender
from tests.integration.notify_helpers import NOW, raise_gave_up, seed_activity
from tests.servers import free_port

RECIPIENTS = ["ops@example.com", "billing@example.com"]


class _Greylisting:
    """Refuses every RCPT with 450 for the first `tries` connections' transactions."""

    def __init__(self, tries: int) -> None:
        self.tries = tries
        self.refused = 0
        self.received: list[list[str]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.refused < self.tries * len(RECIPIENTS):
            self.refused += 1
            return "450 4.2.0 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(list(envelope.rcpt_tos))
        return "250 OK"


def _greylisting(tries: int) -> Iterator[tuple[_Greylisting, EmailChannel, list[float]]]:
    handler = _Greylisting(tries)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    waits: list[float] = []
    target = SmtpTarget.parse(f"smtp://127.0.0.1:{port}")
    try:
        channel = EmailChannel(target, "meterfix@example.com", RECIPIENTS, sleep=waits.append)
        yield handler, channel, waits
    finally:
        controller.stop()


@pytest.fixture
def greylisted_once() -> Iterator[tuple[_Greylisting, EmailChannel, list[float]]]:
    yield from _greylisting(tries=1)


@pytest.fixture
def greylisted_always() -> Iterator[tuple[_Greylisting, EmailChannel, list[float]]]:
    yield from _greylisting(tries=1000)


def _settings(make_settings: Any, db_url: str) -> Any:
    return make_settings(database_url=db_url, mfx_public_url="https://mfx.example.com")


def test_a_greylisted_digest_is_sent_on_the_next_try_inside_the_send(
    db_engine: Engine, db_url: str, make_settings: Any, greylisted_once: Any
) -> None:
    """`_reason` took every SMTPRecipientsRefused for a permanent failure: the digest was
    failed for good ("every recipient was refused") and never delivered."""
    handler, channel, waits = greylisted_once
    seed_activity(db_engine)
    settings = _settings(make_settings, db_url)
    sender = DigestSender(db_engine, settings, [channel], instance="t", clock=lambda: NOW)
    [outcome] = sender.tick()
    assert outcome.status == "sent", outcome.reason
    assert handler.received == [RECIPIENTS] and waits == [2.0]


def test_a_digest_greylisted_on_every_try_is_retried_later_with_the_servers_answer(
    db_engine: Engine, db_url: str, make_settings: Any, greylisted_always: Any
) -> None:
    handler, channel, waits = greylisted_always
    seed_activity(db_engine)
    settings = _settings(make_settings, db_url)
    sender = DigestSender(db_engine, settings, [channel], instance="t", clock=lambda: NOW)
    [outcome] = sender.tick()
    assert outcome.status == "failed" and handler.received == []
    assert waits == [2.0, 4.0]  # temporary: retried inside the send
    with Session(db_engine) as session:
        [row] = session.exec(select(DigestRun)).all()
        gave_up = session.exec(select(Alert).where(Alert.kind == "digest.failed")).all()
    assert row.next_attempt_at is not None and gave_up == []  # and again later
    assert row.last_error and "450 4.2.0 Greylisted, try again later" in row.last_error


def test_a_greylisted_critical_alert_is_retried_not_given_up(
    db_engine: Engine, db_url: str, make_settings: Any, greylisted_always: Any
) -> None:
    _, channel, _ = greylisted_always
    settings = _settings(make_settings, db_url)
    raise_gave_up(db_engine)
    assert send_critical_alerts(db_engine, settings, [channel]) == 0
    with Session(db_engine) as session:
        [alert] = session.exec(select(Alert)).all()
    progress: Any = alert.detail[NOTIFY_STATE]
    raised = progress["raised"]
    assert "given_up" not in raised and raised.get("next_at"), raised
    assert "450 4.2.0 Greylisted" in raised["error"]
    assert alert.notified_at is None  # still due
