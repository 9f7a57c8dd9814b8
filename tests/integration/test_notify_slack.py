"""Digests and critical alerts on Slack, against a local incoming-webhook receiver (real
HTTP through slack_sdk's WebhookClient): Block Kit JSON, 429 Retry-After, 5xx retries."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from service.adapters.channels import build_channels
from service.adapters.slack import SlackChannel
from service.adapters.smtp import EmailChannel, SmtpTarget
from service.db import make_engine
from service.models.alerts import Alert, DigestRun
from service.notify.alerts import raise_alert
from service.notify.critical import send_critical_alerts
from service.notify.digests import DigestSender
from tests.integration.notify_helpers import NOW, SlackReceiver, seed_activity, smtp_server
from tests.servers import serve_wsgi

BASE = "https://mfx.example.com"


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def slack() -> Iterator[tuple[SlackReceiver, str]]:
    receiver = SlackReceiver()
    with serve_wsgi(receiver) as server:
        yield receiver, f"{server.url}/services/T000/B000/XXXXSECRET"


def _settings(make_settings: Any, sqlite_url: str, url: str, **extra: Any) -> Any:
    return make_settings(
        database_url=sqlite_url, slack_webhook_url=url, mfx_public_url=BASE, **extra
    )


def test_a_digest_is_block_kit_with_a_dashboard_button(
    db_engine: Engine, db_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    receiver, url = slack
    run_id = seed_activity(db_engine)["run_id"]
    settings = _settings(make_settings, db_url, url)
    sender = DigestSender(
        db_engine, settings, build_channels(settings), instance="t", clock=lambda: NOW
    )
    assert [o.status for o in sender.tick()] == ["sent"]
    [body] = receiver.bodies
    blocks = body["blocks"]
    assert body["text"].startswith("meterfix digest, 2026-11-29 00:00 to 2026-11-30 00:00 UTC")
    assert blocks[0] == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": "meterfix digest, 2026-11-29 00:00 to 2026-11-30 00:00 UTC",
        },
    }
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert fields == [
        "*Received*\n10 (+5)",
        "*Valid*\n4 (+1)",
        "*Corrected*\n3 (+1)",
        "*Quarantined*\n3 (+3)",
    ]
    texts = "\n".join(b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b)
    assert f"<{BASE}/runs/{run_id}|#{run_id}>" in texts
    assert (
        "`meter_event_customer_not_found` (<"
        f"{BASE}/quarantine?code=meter_event_customer_not_found&run={run_id}"  # the rows counted
        "|rows>)" in texts
    )
    assert f"<{BASE}/events?status=dead|Dead letters>: 1" in texts
    assert "No such customer: acme-42" in texts and "in/x.csv: the poller gave up" in texts
    assert blocks[-2]["type"] == "context"
    assert blocks[-1] == {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Open the dashboard"},
                "url": f"{BASE}/",
            }
        ],
    }
    assert len(blocks) <= 50 and all(len(t) <= 3000 for t in texts.split("\x00"))


def test_examples_off_keeps_customers_out_of_slack(
    engine: Engine, sqlite_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    receiver, url = slack
    seed_activity(engine)
    settings = _settings(make_settings, sqlite_url, url, mfx_message_examples=False)
    DigestSender(engine, settings, build_channels(settings), instance="t", clock=lambda: NOW).tick()
    sent = receiver.texts()
    assert "api_requests" in sent
    for secret in ("acme-42", "cus_Secret9", "99999999999", "payload_"):
        assert secret not in sent


def test_a_429_waits_for_retry_after(
    engine: Engine, sqlite_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    receiver, url = slack
    seed_activity(engine)
    receiver.answers = [("429 Too Many Requests", [("Retry-After", "1")])]
    settings = _settings(make_settings, sqlite_url, url)
    sender = DigestSender(
        engine, settings, build_channels(settings), instance="t", clock=lambda: NOW
    )
    assert [o.status for o in sender.tick()] == ["sent"]
    assert len(receiver.bodies) == 2 and receiver.bodies[0] == receiver.bodies[1]
    assert receiver.times[1] - receiver.times[0] >= 0.95  # waited as Slack asked


def test_a_500_is_retried_then_recorded_failed_without_the_url(
    engine: Engine,
    sqlite_url: str,
    make_settings: Any,
    slack: tuple[SlackReceiver, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver, url = slack
    seed_activity(engine)
    receiver.answers = [("500 Internal Server Error", [])] * 4
    waits: list[float] = []
    settings = _settings(make_settings, sqlite_url, url)
    channel = SlackChannel(url, sleep=waits.append)
    sender = DigestSender(engine, settings, [channel], instance="t", clock=lambda: NOW)
    with caplog.at_level(logging.DEBUG):
        [outcome] = sender.tick()
    assert outcome.status == "failed" and "HTTP 500" in outcome.reason
    assert len(receiver.bodies) == 4 and waits == [1.0, 2.0, 4.0]
    with Session(engine) as session:
        [row] = session.exec(select(DigestRun)).all()
    assert (row.status, row.attempts) == ("failed", 1) and "HTTP 500" in (row.last_error or "")
    assert row.next_attempt_at is not None  # retried later with backoff
    ours = [r.getMessage() for r in caplog.records if r.name != "werkzeug"]  # not the receiver
    assert ours and not [line for line in ours if "XXXXSECRET" in line]
    assert "XXXXSECRET" not in (row.last_error or "")
    # the next try, once due, sends the window (Slack is back)
    later = DigestSender(
        engine, settings, [channel], instance="t2", clock=lambda: NOW + timedelta(hours=2)
    )
    assert [o.status for o in later.tick()] == ["sent"]
    with Session(engine) as session:
        [row] = session.exec(select(DigestRun)).all()
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)


def test_a_critical_alert_failing_on_one_channel_is_not_repeated_on_the_other(
    engine: Engine, sqlite_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    receiver, url = slack
    receiver.answers = [("503 Service Unavailable", [])] * 4
    with smtp_server() as (mailbox, port):
        settings = _settings(
            make_settings,
            sqlite_url,
            url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            digest_email_to="ops@example.com",
        )
        channels = [
            SlackChannel(url, sleep=lambda _: None),
            EmailChannel(SmtpTarget.parse(settings.smtp_url), "m@example.com", ["ops@example.com"]),
        ]
        raise_alert(
            engine,
            key="inbox.dead:evt_1",
            severity="critical",
            kind="inbox.dead_letter",
            subject="Stripe event evt_1 dead-lettered",
            message="boom",
            links={"event": "evt_1"},
        )
        assert send_critical_alerts(engine, settings, channels, clock=lambda: NOW) == 0
        assert len(mailbox.received) == 1 and len(receiver.bodies) == 4
        assert send_critical_alerts(engine, settings, channels, clock=lambda: NOW) == 0  # backoff
        later = NOW + timedelta(hours=1)
        assert send_critical_alerts(engine, settings, channels, clock=lambda: later) == 1
        assert send_critical_alerts(engine, settings, channels, clock=lambda: later) == 0
    assert len(mailbox.received) == 1 and len(receiver.bodies) == 5  # email never repeated
    assert receiver.bodies[-1]["blocks"][0]["text"]["text"].startswith("CRITICAL: Stripe event")
    with Session(engine) as session:
        alert = session.exec(select(Alert)).one()
    assert alert.notified_at is not None
    assert json.dumps(alert.detail["notify"]["raised"]["channels"]) == '["email", "slack"]'


def test_windows_missed_while_no_worker_ran_are_caught_up_in_order(
    engine: Engine, sqlite_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    receiver, url = slack
    seed_activity(engine)  # runs on Nov 28 (12:00) and Nov 29
    day = timedelta(days=1)
    last_end = NOW.replace(hour=0, minute=0) - 3 * day  # the last window sent ended Nov 27
    with Session(engine) as session:
        session.add(
            DigestRun(
                channel="slack", window_start=last_end - day, window_end=last_end, status="sent"
            )
        )
        session.commit()
    settings = _settings(make_settings, sqlite_url, url)
    sender = DigestSender(
        engine, settings, build_channels(settings), instance="t", clock=lambda: NOW
    )
    outcomes = sender.tick()
    assert [(o.window.end.day, o.status) for o in outcomes] == [
        (28, "empty"),
        (29, "sent"),
        (30, "sent"),
    ]
    assert [b["text"][:53] for b in receiver.bodies] == [
        "meterfix digest, 2026-11-28 00:00 to 2026-11-29 00:00",
        "meterfix digest, 2026-11-29 00:00 to 2026-11-30 00:00",
    ]
