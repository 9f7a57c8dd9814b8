"""What a digest says of alerts, sent through real channels (aiosmtpd, a local Slack
receiver): every open critical alert counted (1,000 open were said to be 10), the warning
alerts raised in the window (a window whose only news they were said nothing of them), and
in Slack an object key shown as text, never a link Slack makes of it."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from service.adapters.channels import build_channels
from service.models import RemediationRun
from service.models.alerts import Alert, DigestRun
from service.notify.digests import DigestSender
from tests.integration.notify_helpers import DAY, NOW, SlackReceiver, smtp_server
from tests.servers import serve_wsgi

BASE = "https://mfx.example.com"
WARNINGS = f"{BASE}/alerts?severity=warning"


def _alerts(engine: Engine, severity: str, n: int, kind: str) -> None:
    with Session(engine) as session:
        for i in range(n):
            seen = DAY + timedelta(hours=1, seconds=i)  # the last one the latest
            session.add(
                Alert(
                    alert_key=f"{kind}:{i}",
                    severity=severity,
                    kind=kind,
                    subject=f"in/{kind}-{i:02d}.csv: {kind}",
                    message="m",
                    created_at=seen,
                    last_seen_at=seen,
                )
            )
        session.commit()


def _send(engine: Engine, db_url: str, make_settings: Any) -> tuple[str, str, str, dict[str, Any]]:
    """The digest of DAY as plain text, HTML and Slack JSON, and its stored summary."""
    receiver = SlackReceiver()
    with serve_wsgi(receiver) as server, smtp_server() as (mailbox, port):
        settings = make_settings(
            database_url=db_url,
            slack_webhook_url=f"{server.url}/services/T0/B0/X",
            smtp_url=f"smtp://127.0.0.1:{port}",
            digest_email_to="ops@example.com",
            mfx_public_url=BASE,
        )
        sender = DigestSender(
            engine, settings, build_channels(settings), instance="t", clock=lambda: NOW
        )
        assert [o.status for o in sender.tick()] == ["sent", "sent"]
    [(_, _, email)] = mailbox.received
    plain = email.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = email.get_body(("html",)).get_content()
    with Session(engine) as session:
        summary = session.exec(select(DigestRun).where(DigestRun.channel == "email")).one().summary
    return plain, html, json.dumps(receiver.bodies, ensure_ascii=False), summary


def test_every_open_critical_alert_is_counted(
    db_engine: Engine, db_url: str, make_settings: Any
) -> None:
    _alerts(db_engine, "critical", 25, "poller.gave_up")
    plain, html, slack, summary = _send(db_engine, db_url, make_settings)
    assert f"Open critical alerts: 25  {BASE}/alerts\n" in plain
    assert "  - [open] in/poller.gave_up-24.csv: poller.gave_up (x1)\n" in plain
    assert "  and 15 more\n" in plain
    assert "Open critical alerts</a>: 25<br>" in html and "<br>and 15 more</li>" in html
    assert "Open critical alerts>: 25" in slack and "    and 15 more" in slack
    assert summary["open_critical_alerts"] == 25


def test_a_window_of_warnings_only_says_them(
    db_engine: Engine, db_url: str, make_settings: Any
) -> None:
    _alerts(db_engine, "warning", 12, "poller.taken_again")
    plain, html, slack, summary = _send(db_engine, db_url, make_settings)
    assert f"Warning alerts raised in this window: 12  {WARNINGS}\n" in plain
    line = "[open] poller.taken_again: in/poller.taken_again-11.csv: poller.taken_again (x1)"
    assert f"  - {line}\n" in plain and "  and 2 more\n" in plain
    assert "-01.csv" not in plain  # the ten latest are listed
    assert f'<a href="{WARNINGS}" style="color:#1a5fb4;">Warning alerts raised in this' in html
    assert f"<br>{line}" in html and "<br>and 2 more</li>" in html
    assert f"<{WARNINGS}|Warning alerts raised in this window>: 12" in slack
    assert "[open] poller.taken_again: `in/poller.taken_again-11.csv: poller.taken_again`" in slack
    assert "    and 2 more" in slack
    assert summary["warning_alerts"] == 12


def test_an_object_key_in_a_slack_digest_is_a_code_span(
    db_engine: Engine, db_url: str, make_settings: Any
) -> None:
    """Run sources and alert subjects went through `escape()` only: Slack makes a link of
    a key such as https://evil.example/phish (an alert's own message shows it as code)."""
    key = "https://evil.example/phish"
    with Session(db_engine) as session:
        finished = DAY + timedelta(hours=3)
        session.add(
            RemediationRun(
                run_key="object:k",
                trigger="poller",
                source=key,
                status="done",
                input_rows=1,
                valid=1,
                created_at=finished,
                finished_at=finished,
            )
        )
        session.commit()
    _alerts(db_engine, "critical", 1, key)
    _, _, slack, _ = _send(db_engine, db_url, make_settings)
    texts = [
        block["text"]["text"]
        for body in json.loads(slack)
        for block in body["blocks"]
        if block.get("type") == "section" and "text" in block
    ]
    shown = "\n".join(texts)
    assert f" poller `{key}`: 1 received" in shown
    assert f"[open] `in/{key}-00.csv: {key}`" in shown
    assert key not in shown.replace(f"`{key}`", "").replace(f"`in/{key}-00.csv: {key}`", "")
