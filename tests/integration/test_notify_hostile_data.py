# ruff: noqa: F811  (the fixture imported from the module that defines it)
"""Object keys and quoted values that try to be read as something other than text where
people receive them: an RFC 2047 encoded word in an email subject, a URL or mrkdwn in a
Slack message. Against aiosmtpd and the local Slack receiver, on SQLite and PostgreSQL
(MFX_TEST_DATABASE_URL). Each test failed on the code before its fix (the docstrings say
what went wrong)."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Engine

from service.adapters.channels import build_channels
from service.adapters.slack import SlackChannel
from service.notify.alerts import raise_alert
from service.notify.critical import send_critical_alerts
from service.notify.digest_lines import Digest, ReasonLine, Totals
from service.notify.render import render_digest
from tests.integration.notify_helpers import NOW, SlackReceiver, smtp_server
from tests.integration.test_notify_slack import BASE, slack  # noqa: F401 (fixture)
from tests.unit.notify.test_render import LINKS, WINDOW

# A usage file's key holding an encoded word that decodes to CR LF, a header and a body.
ENCODED_WORD_KEY = (
    "=?utf-8?q?usage=0D=0AReply-To:_billing@evil.example=0D=0A=0D=0AURGENT:"
    "_re-enter_card_at_https:=2F=2Fevil.example=2Fpay?=.csv"
)


def test_an_encoded_word_in_a_key_stays_text_in_the_email_subject(
    db_engine: Engine, db_url: str, make_settings: Any
) -> None:
    """README, critical alerts: "an email subject is one line". The gave-up alert's subject
    starts with the object key; the email package decodes an encoded word in a header value
    it is given and (Python 3.11.7) wrote its CR LF as they were: the email received had
    the attacker's `Reply-To: billing@evil.example` header and the attacker's body
    ("URGENT: re-enter card at https://evil.example/pay"), our From, To and MIME headers
    pushed into it."""
    raise_alert(
        db_engine,
        key=f"poller.gave_up:{ENCODED_WORD_KEY}",
        severity="critical",
        kind="poller.gave_up",
        subject=f"{ENCODED_WORD_KEY}: import failing for 6 h; the poller gave up",
        message="HTTP 500",
    )
    with smtp_server() as (mailbox, port):
        settings = make_settings(
            database_url=db_url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            digest_email_to="ops@example.com",
            digest_email_from="meterfix@example.com",
            mfx_public_url=BASE,
        )
        channels = build_channels(settings)
        assert send_critical_alerts(db_engine, settings, channels, clock=lambda: NOW) == 1
        [(sender, recipients, email)] = mailbox.received
    assert (sender, recipients) == ("meterfix@example.com", ["ops@example.com"])
    assert email["Subject"] == (
        f"[meterfix] CRITICAL: {ENCODED_WORD_KEY}: import failing for 6 h; the poller gave up"
    )
    assert email["Reply-To"] is None
    assert email["From"] == "meterfix@example.com" and email["To"] == "ops@example.com"
    assert email.get_content_type() == "multipart/alternative"
    assert len(email.get_all("Subject") or []) == 1
    text = email.get_body(("plain",)).get_content()
    assert text.startswith(f"meterfix CRITICAL: {ENCODED_WORD_KEY}: import failing")
    assert "URGENT" not in text.replace(ENCODED_WORD_KEY, "")


# A key as a bucket may hold it: a URL Slack would make a link of, and mrkdwn.
URL_KEY = "usage/https://evil.example/reset-password.csv"
MARKUP_KEY = "usage/*pay* _now_ ~x~.csv"


def _outside_code(text: str) -> str:
    """What Slack formats of a mrkdwn text: all but its `code spans`."""
    return re.sub(r"`[^`\n]*`", "", text)


def _sections(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [b["text"] for b in body["blocks"] if b["type"] == "section" and "text" in b]


def test_a_key_in_an_alert_message_is_neither_linked_nor_formatted_in_slack(
    db_engine: Engine, make_settings: Any, db_url: str, slack: tuple[SlackReceiver, str]
) -> None:
    """README, critical alerts: "an object key or an id is shown as text, whatever it starts
    with". The message section wrote the alert's message (which names the run's source) as
    plain mrkdwn, without `verbatim`: Slack made a link of `https://evil.example/…` in the
    key and read `*pay*` as bold, `_now_` as italic."""
    receiver, url = slack
    settings = make_settings(database_url=db_url, slack_webhook_url=url, mfx_public_url=BASE)
    raise_alert(
        db_engine,
        key="remediation.run:2",
        severity="critical",
        kind="remediation.run",
        subject="run #2 (poller): 3 rows quarantined (threshold 2)",
        message=f"3 rows received: 3 quarantined; sources {URL_KEY} and {MARKUP_KEY}",
        links={"run": 2, "source": URL_KEY},
    )
    assert send_critical_alerts(db_engine, settings, [SlackChannel(url)], clock=lambda: NOW) == 1
    [body] = receiver.bodies
    texts = _sections(body)
    [message] = [t for t in texts if MARKUP_KEY in t["text"]]
    assert message["verbatim"] is True  # no auto-link of a URL in it
    assert "*pay*" not in _outside_code(message["text"]), message
    assert "https://" not in _outside_code(message["text"]), message
    [source] = [t for t in texts if "source:" in t["text"]]
    assert source["verbatim"] is True and f"`{URL_KEY}`" in source["text"]


def test_a_quoted_value_in_a_digest_reason_is_neither_linked_nor_formatted_in_slack(
    slack: tuple[SlackReceiver, str],
) -> None:
    """The digest's "Top quarantine reasons" wrote each reason (which quotes the row's value)
    as plain mrkdwn: `*VIP*` was bold and a URL in it a link. Rendered as the digest job
    does, checked on the Block Kit payload the Slack receiver got."""
    receiver, url = slack
    digest = Digest(WINDOW, "UTC", True, Totals(1, 1, 0, 0, 1), Totals())
    reason = "value 'https://evil.example/x *VIP* _x_' is not a number"
    digest.reasons = [ReasonLine("meter_event_invalid_value", reason, 1, None, "https://x/q")]
    digest.links = LINKS
    SlackChannel(url).send(render_digest(digest, now=WINDOW.end))
    blocks = [b for body in receiver.bodies for b in body["blocks"]]
    [section] = [b["text"] for b in blocks if "Top quarantine reasons" in str(b)]
    assert section["verbatim"] is True
    outside = _outside_code(section["text"])
    assert "*VIP*" not in outside and "evil.example" not in outside, section
