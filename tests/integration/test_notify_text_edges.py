# ruff: noqa: F811  (fixtures imported from the module that defines them)
"""Messages at their edges: untrusted text (object keys, reasons, sources) holding line breaks
or bidi controls in plain-text email and Slack, the alert a failed digest raises, and what a
digest's quarantine link opens when several runs quarantined rows. Against aiosmtpd, the
local Slack receiver and SQLite (and PostgreSQL when MFX_TEST_DATABASE_URL is set). Each test
failed on the code before its fix (the docstrings say what went wrong)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import Engine
from sqlmodel import Session, select

from service.adapters.channels import build_channels
from service.adapters.slack import SlackChannel
from service.models import QuarantinedRow, RemediationRun
from service.models.alerts import Alert
from service.notify.alerts import raise_alert
from service.notify.critical import send_critical_alerts
from service.notify.digests import DigestSender
from service.notify.windows import Window
from service.web.params import page, quarantine_filter
from service.web.quarantine import list_quarantine
from tests.integration.notify_helpers import NOW, SlackReceiver, smtp_server
from tests.integration.test_notify_slack import slack  # noqa: F401 (fixture)

BASE = "https://mfx.example.com"
DAY = datetime(2026, 11, 29, tzinfo=UTC)
HOUR = timedelta(hours=1)
ALERTS_URL = f"{BASE}/alerts"
# An object key as a customer's bucket may hold it: a line break, then a line of our own.
FORGING_KEY = "in/a.csv\nAlerts: https://evil.example/login"


def _email_settings(make_settings: Any, db_url: str, port: int, **extra: Any) -> Any:
    return make_settings(
        database_url=db_url,
        smtp_url=f"smtp://127.0.0.1:{port}",
        digest_email_to="ops@example.com",
        digest_email_from="meterfix@example.com",
        mfx_public_url=BASE,
        **extra,
    )


def _plain_and_html(message: Any) -> tuple[str, str]:
    return (
        message.get_body(("plain",)).get_content(),
        message.get_body(("html",)).get_content(),
    )


def _lines_starting(text: str, start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(start)]


# --- plain-text email ------------------------------------------------------------------------


def test_a_line_break_in_an_alert_value_forges_no_line_in_the_plain_text_email(
    db_engine: Engine, db_url: str, make_settings: Any
) -> None:
    """README, critical alerts: "an object key or an id is shown as text, whatever it starts
    with"; the dashboard writes a bidi control as its code point (`[U+202E]`).

    Instead the plain-text part wrote each value as it is: an object key holding a line
    break added its own `Alerts: https://evil.example/login` line under ours, a reason's CR LF
    and a customer's U+2028 broke lines too, and U+202E reversed the key it was in."""
    raise_alert(
        db_engine,
        key="poller.gave_up:forged",
        severity="critical",
        kind="poller.gave_up",
        subject="usage/report-\u202evsc.exe: the poller gave up",
        message="HTTP 400\r\nRows: 0\x9b2J",
        customer="cus_1\u2028Severity: info",
        links={"objects": [FORGING_KEY]},
    )
    with smtp_server() as (mailbox, port):
        settings = _email_settings(make_settings, db_url, port)
        channels = build_channels(settings)
        assert send_critical_alerts(db_engine, settings, channels, clock=lambda: NOW) == 1
        [(_, _, email)] = mailbox.received
    text, html = _plain_and_html(email)
    assert email["Subject"] == (
        "[meterfix] CRITICAL: usage/report-[U+202E]vsc.exe: the poller gave up"
    )  # the subject line is drawn by mail clients too: the key is not reversed there either
    assert _lines_starting(text, "Alerts:") == [f"Alerts: {ALERTS_URL}"], text
    assert _lines_starting(text, "Rows:") == [] and _lines_starting(text, "Severity: info") == []
    assert "objects: in/a.csv[U+000A]Alerts: https://evil.example/login" in text
    assert "HTTP 400[U+000D][U+000A]Rows: 0[U+009B]2J" in text  # a C1 control (CSI) too
    assert "Customer: cus_1[U+2028]Severity: info" in text
    assert "usage/report-[U+202E]vsc.exe: the poller gave up" in text
    # the HTML part is drawn as the dashboard draws it: controls as code points, still escaped
    assert "\u202e" not in html and "usage/report-[U+202E]vsc.exe" in html
    assert "\x9b" not in html and "Rows: 0[U+009B]2J" in html
    assert '<a href="https://evil' not in html and "in/a.csv" in html


def _run_with_row(
    engine: Engine, source: str, reason: str, finished: datetime = DAY + 9 * HOUR
) -> int:
    """A done run of the digest window (Nov 29, UTC) that quarantined one row."""
    with Session(engine) as session:
        run = RemediationRun(
            run_key="import_set:impset_nl:file_1",
            trigger="import_set.succeeded",
            source=source,
            status="done",
            input_rows=2,
            valid=1,
            corrected=0,
            quarantined=1,
            by_code={"timestamp_in_future": {"corrected": 0, "quarantined": 1}},
            created_at=finished,
            finished_at=finished,
        )
        session.add(run)
        session.flush()
        assert run.id is not None
        session.add(
            QuarantinedRow(
                run_id=run.id,
                source=source,
                row_number=1,
                identifier="q\u20281",
                code="timestamp_in_future",
                reason=reason,
                meter="api_requests",
                customer="cus_A",
                record={"identifier": "q\u20281", "note": "\u202e"},
                created_at=finished,
            )
        )
        session.commit()
        return run.id


def test_a_line_break_in_a_digest_value_forges_no_line_in_the_plain_text_email(
    db_engine: Engine, db_url: str, make_settings: Any
) -> None:
    """README: a digest holds the top quarantine reasons with an example row and the runs,
    and "Every line links to its dashboard page ... and a button to `/`".

    Instead a run's source (an object key) holding a line break wrote its own
    `Dashboard: https://evil.example` line into the plain-text digest, a reason its own
    `Open critical alerts` line, and an example row's U+2028 and U+202E went out as is."""
    _run_with_row(
        db_engine,
        source="usage/a.csv\nDashboard: https://evil.example",
        reason="too far ahead\nOpen critical alerts: 0",
    )
    with smtp_server() as (mailbox, port):
        settings = _email_settings(make_settings, db_url, port)
        sender = DigestSender(
            db_engine, settings, build_channels(settings), instance="t", clock=lambda: NOW
        )
        assert [o.status for o in sender.tick()] == ["sent"]
        [(_, _, email)] = mailbox.received
    text, html = _plain_and_html(email)
    assert _lines_starting(text, "Dashboard:") == [f"Dashboard: {BASE}/"], text
    assert _lines_starting(text, "Open critical alerts:") == ["Open critical alerts: 0"], text
    assert "usage/a.csv[U+000A]Dashboard: https://evil.example" in text
    assert "too far ahead[U+000A]Open critical alerts: 0" in text
    assert "\u2028" not in text and "\u202e" not in text and "q[U+2028]1" in text
    assert "\u202e" not in html and "[U+202E]" in html


# --- Slack -----------------------------------------------------------------------------------


def test_a_line_break_in_a_value_forges_no_line_in_slack(
    db_engine: Engine, db_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    """README, critical alerts: "an object key or an id is shown as text, whatever it starts
    with (in Slack, `<!channel>`, `<@U…>` or `<url|label>` in one is escaped ...)".

    Instead a line break in a value went into the mrkdwn as is: the object key above added
    its own line `Alerts: https://evil.example/login` (Slack links a bare URL), in the
    alert's links section and in the headline, and U+202E reversed the key it was in."""
    receiver, url = slack
    settings = make_settings(database_url=db_url, slack_webhook_url=url, mfx_public_url=BASE)
    raise_alert(
        db_engine,
        key="poller.gave_up:forged",
        severity="critical",
        kind="poller.gave_up",
        subject=f"{FORGING_KEY}: the poller gave up",
        message=f"object {FORGING_KEY} failed",
        customer="cus_\u202e1",
        links={"objects": [FORGING_KEY]},
    )
    sent = send_critical_alerts(db_engine, settings, [SlackChannel(url)], clock=lambda: NOW)
    assert sent == 1
    [body] = receiver.bodies
    dumped = json.dumps(body, ensure_ascii=False)
    assert "\\nAlerts: https://evil" not in dumped and "\u202e" not in dumped
    assert "in/a.csv[U+000A]Alerts: https://evil.example/login" in body["text"]
    assert "`in/a.csv[U+000A]Alerts: https://evil.example/login`" in dumped
    assert "`cus_[U+202E]1`" in dumped


# --- a failed digest's alert -----------------------------------------------------------------


def _digest_sender(
    engine: Engine, make_settings: Any, db_url: str, url: str, every: str, now: datetime
) -> DigestSender:
    settings = make_settings(
        database_url=db_url, slack_webhook_url=url, mfx_public_url=BASE, digest_every=every
    )
    return DigestSender(engine, settings, build_channels(settings), instance="t", clock=lambda: now)


def test_a_failed_daily_digest_is_not_the_failed_hourly_one_of_the_same_start(
    db_engine: Engine, db_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    """README: a failed send is retried, "each failure is recorded on the row with its reason,
    then a warning alert"; `DIGEST_EVERY` may change from `1h` to `1d`.

    Instead the alert's key named the channel and the window's start only: the daily digest
    from midnight that failed was counted as one more occurrence of the hourly one from
    midnight (same key, same subject, `count` 2), so nothing said the day's digest was lost,
    and resolving one resolved the other."""
    receiver, url = slack
    _run_with_row(db_engine, "usage/a.csv", "too far ahead", finished=DAY + 0.5 * HOUR)
    receiver.answers = [("400 Bad Request", []), ("400 Bad Request", [])]  # for good
    hourly = _digest_sender(db_engine, make_settings, db_url, url, "1h", DAY + HOUR)
    assert [(o.window.end, o.status) for o in hourly.tick()] == [(DAY + HOUR, "failed")]
    daily = _digest_sender(db_engine, make_settings, db_url, url, "1d", DAY + 25 * HOUR)
    assert [(o.window.end, o.status) for o in daily.tick()] == [(DAY + 24 * HOUR, "failed")]
    assert len(receiver.bodies) == 2
    with Session(db_engine) as session:
        alerts = session.exec(
            select(Alert).where(Alert.kind == "digest.failed").order_by(Alert.id)
        ).all()
    assert [(a.count, a.subject) for a in alerts] == [
        (1, "slack digest for 2026-11-29 00:00 to 01:00 UTC could not be sent"),
        (1, "slack digest for 2026-11-29 00:00 to 2026-11-30 00:00 UTC could not be sent"),
    ]
    assert alerts[0].alert_key != alerts[1].alert_key
    assert [a.detail["window_end"] for a in alerts] == [
        (DAY + HOUR).isoformat(),
        (DAY + 24 * HOUR).isoformat(),
    ]


# --- quarantine links ------------------------------------------------------------------------


def _quarantining_run(engine: Engine, key: str, started: datetime, finished: datetime) -> None:
    with Session(engine) as session:
        run = RemediationRun(
            run_key=key,
            trigger="import_set.succeeded",
            source=f"usage/{key}.csv",
            status="done",
            input_rows=1,
            valid=0,
            corrected=0,
            quarantined=1,
            by_code={"timestamp_in_future": {"corrected": 0, "quarantined": 1}},
            created_at=started,
            finished_at=finished,
        )
        session.add(run)
        session.flush()
        assert run.id is not None
        session.add(
            QuarantinedRow(
                run_id=run.id,
                source=run.source,
                row_number=1,
                identifier=key,
                code="timestamp_in_future",
                reason="timestamp too far ahead",
                meter="api_requests",
                customer="cus_A",
                record={"identifier": key},
                created_at=started,
            )
        )
        session.commit()


def test_a_quarantine_link_of_several_runs_opens_the_rows_the_digest_counts(
    db_engine: Engine, db_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    """README: "A quarantine link opens the rows the digest counts".

    Where several runs finished in the window quarantined rows, the link falls back to the
    rows quarantined in the window (`since`/`until`): the rows of a run that started before
    midnight and is counted are left out, the rows of one still running at the window's end
    (the next digest's) are shown."""
    _, url = slack
    _quarantining_run(db_engine, "late_start", DAY - timedelta(minutes=10), DAY + 0.2 * HOUR)
    _quarantining_run(db_engine, "noon", DAY + 12 * HOUR, DAY + 13 * HOUR)
    _quarantining_run(db_engine, "unfinished", DAY + 23 * HOUR, DAY + 25 * HOUR)
    sender = _digest_sender(db_engine, make_settings, db_url, url, "1d", DAY + 26 * HOUR)
    [line] = sender.collect(Window(DAY, DAY + 24 * HOUR)).codes
    assert line.quarantined == 2
    query = parse_qs(urlsplit(line.url).query)
    listing = list_quarantine(
        db_engine, quarantine_filter({k: v[0] for k, v in query.items()}), page({})
    )
    assert {row["identifier"] for row in listing.data} == {"late_start", "noon"}
