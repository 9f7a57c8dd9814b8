"""Digests and critical alerts by email, against a real SMTP server (aiosmtpd): plain,
STARTTLS and implicit TLS, with AUTH; the parsed message is checked part by part."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from service.adapters.channels import build_channels
from service.adapters.smtp import EmailChannel, SmtpTarget
from service.db import make_engine
from service.models.alerts import DigestRun
from service.notify.alerts import resolve_alert
from service.notify.critical import send_critical_alerts
from service.notify.digests import DigestSender
from tests.integration.notify_helpers import (
    NOW,
    SMTP_PASSWORD,
    SMTP_USER,
    client_tls,
    raise_gave_up,
    seed_activity,
    self_signed_cert,
    smtp_server,
)
from tests.servers import free_port

BASE = "https://mfx.example.com"
SUBJECT = "meterfix digest, 2026-11-29 00:00 to 2026-11-30 00:00 UTC: 3 corrected, 3 quarantined"


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    self_signed_cert(tmp_path)
    return tmp_path


def _settings(make_settings: Any, sqlite_url: str, smtp_url: str, **extra: Any) -> Any:
    return make_settings(
        database_url=sqlite_url,
        smtp_url=smtp_url,
        digest_email_to="ops@example.com, billing@example.com",
        digest_email_from="meterfix@example.com",
        mfx_public_url=BASE,
        **extra,
    )


def _sender(engine: Engine, settings: Any, tls: Any = None) -> DigestSender:
    channels = build_channels(settings, tls_context=tls)
    return DigestSender(engine, settings, channels, instance="test", clock=lambda: NOW)


def _parts(message: Any) -> tuple[str, str]:
    return (
        message.get_body(("plain",)).get_content(),
        message.get_body(("html",)).get_content(),
    )


def test_a_digest_arrives_once_with_counts_and_links(
    db_engine: Engine, db_url: str, make_settings: Any
) -> None:
    run_id = seed_activity(db_engine)["run_id"]
    with smtp_server() as (mailbox, port):
        url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{port}"
        sender = _sender(db_engine, _settings(make_settings, db_url, url))
        assert [o.status for o in sender.tick()] == ["sent"]
        assert sender.tick() == []  # the window is recorded: never sent twice
    [(mail_from, recipients, message)] = mailbox.received
    assert (mail_from, recipients) == (
        "meterfix@example.com",
        ["ops@example.com", "billing@example.com"],
    )
    assert message["Subject"] == SUBJECT and message["To"] == "ops@example.com, billing@example.com"
    assert mailbox.logins == [(SMTP_USER, False)]
    plain, html = _parts(message)
    new_input = "New input in this window (1 run): 10 received, 4 valid, 3 corrected, 3 quarantined"
    assert new_input in plain
    assert "Previous window: 5 received, 3 valid, 2 corrected, 0 quarantined (+5 received)" in plain
    assert "meter_event_customer_not_found: 2 corrected, 2 quarantined (+4 vs previous" in plain
    assert "timestamp_in_future: 1 corrected, 1 quarantined (+0 vs previous" in plain
    group = (
        f"{BASE}/quarantine?code=meter_event_customer_not_found&meter=api_requests&customer=acme-42"
    )
    for part in (plain, html.replace("&amp;", "&")):
        assert f"{BASE}/runs/{run_id}" in part and group in part
        assert f"{BASE}/alerts" in part and f"{BASE}/events?status=dead" in part
        assert "No such customer: acme-42" in part and "in/x.csv: the poller gave up" in part
        assert "evt_dead_1" in part
    assert "example: " in plain and '"payload_stripe_customer_id": "acme-42"' in plain
    assert "<table" in html and "<script" not in html.lower() and 'style="' in html
    with Session(db_engine) as session:
        [row] = session.exec(select(DigestRun)).all()
    assert (row.channel, row.status, row.attempts) == ("email", "sent", 1)
    assert row.sent_at is not None and row.summary["totals"]["corrected"] == 3  # type: ignore[index]


@pytest.mark.parametrize("mode", ["starttls", "smtps"])
def test_tls_modes(
    engine: Engine, sqlite_url: str, make_settings: Any, certs: Path, mode: str
) -> None:
    seed_activity(engine)
    tls = {"starttls": certs} if mode == "starttls" else {"implicit_tls": certs}
    with smtp_server(**tls) as (mailbox, port):
        scheme = "smtp" if mode == "starttls" else "smtps"
        url = f"{scheme}://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{port}"
        sender = _sender(
            engine, _settings(make_settings, sqlite_url, url), client_tls(certs / "cert.pem")
        )
        assert [o.status for o in sender.tick()] == ["sent"]
    [(_, _, message)] = mailbox.received
    assert message["Subject"] == SUBJECT
    assert mailbox.logins == [(SMTP_USER, True)]  # the password only ever crossed TLS


def test_examples_off_keeps_customers_and_values_out(
    engine: Engine, sqlite_url: str, make_settings: Any
) -> None:
    seed_activity(engine)
    with smtp_server() as (mailbox, port):
        url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{port}"
        settings = _settings(make_settings, sqlite_url, url, mfx_message_examples=False)
        assert [o.status for o in _sender(engine, settings).tick()] == ["sent"]
    [(_, _, message)] = mailbox.received
    for part in _parts(message):
        for secret in ("acme-42", "cus_Secret9", "99999999999", "example:", "payload_"):
            assert secret not in part
        assert "meter_event_customer_not_found" in part and "api_requests" in part


def test_an_empty_window_sends_nothing(engine: Engine, sqlite_url: str, make_settings: Any) -> None:
    with smtp_server() as (mailbox, port):
        url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{port}"
        assert [
            o.status for o in _sender(engine, _settings(make_settings, sqlite_url, url)).tick()
        ] == ["empty"]
    assert mailbox.received == []


def test_smtp_down_is_retried_then_recorded_without_the_password(
    engine: Engine, sqlite_url: str, make_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    seed_activity(engine)
    url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{free_port()}"  # nobody listens
    settings = _settings(make_settings, sqlite_url, url)
    waits: list[float] = []
    channel = EmailChannel(
        SmtpTarget.parse(url), "meterfix@example.com", ["ops@example.com"], sleep=waits.append
    )
    sender = DigestSender(engine, settings, [channel], instance="t", clock=lambda: NOW)
    with caplog.at_level(logging.INFO, logger="meterfix"):
        [outcome] = sender.tick()
    assert outcome.status == "failed" and "ConnectionRefused" in outcome.reason
    assert waits == [2.0, 4.0]  # retried inside the send with backoff
    with Session(engine) as session:
        [row] = session.exec(select(DigestRun)).all()
    assert row.status == "failed" and row.next_attempt_at is not None
    assert row.last_error and "ConnectionRefused" in row.last_error
    assert SMTP_PASSWORD not in caplog.text and SMTP_PASSWORD not in (row.last_error or "")


def test_a_critical_alert_is_mailed_once_then_once_resolved(
    engine: Engine, sqlite_url: str, make_settings: Any
) -> None:
    with smtp_server() as (mailbox, port):
        url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{port}"
        settings = _settings(make_settings, sqlite_url, url)
        channels = build_channels(settings)
        for _ in range(3):  # the same incident, raised again and again
            raise_gave_up(engine, links={"run": 7})
            send_critical_alerts(engine, settings, channels)
        resolve_alert(engine, "poller.gave_up:k")
        send_critical_alerts(engine, settings, channels)
        send_critical_alerts(engine, settings, channels)
    subjects = [m["Subject"] for _, _, m in mailbox.received]
    assert subjects == [
        "[meterfix] CRITICAL: in/k.csv: the poller gave up",
        "[meterfix] Resolved: in/k.csv: the poller gave up",
    ]
    plain, html = _parts(mailbox.received[0][2])
    assert f"{BASE}/runs/7" in plain and f"{BASE}/alerts" in html and "HTTP 500" in plain
