# ruff: noqa: F811  (fixtures imported from the module that defines them)
"""Notifications at their edges (digest windows across DST and crontabs, retention, critical
alerts racing their incidents, hostile keys and refused recipients), against real local
servers: a Slack incoming-webhook receiver, an aiosmtpd SMTP server, SQLite (and PostgreSQL
when MFX_TEST_DATABASE_URL is set). Each test failed on the code before its fix (the
docstrings say what went wrong)."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine
from sqlmodel import Session, select

from remediation.ports import ObjectInfo
from service.adapters.channels import build_channels
from service.adapters.slack import SlackChannel
from service.adapters.smtp import EmailChannel, SmtpTarget
from service.models import RemediationRun
from service.models.alerts import Alert, DigestRun
from service.notify.alerts import raise_alert, resolve_alert
from service.notify.critical import send_critical_alerts
from service.notify.digests import DigestSender
from service.notify.retention import purge_expired
from service.poller.failures import Verdict, raise_gave_up
from service.poller.object_progress import ObjectProgress
from tests.integration.notify_helpers import NOW, SlackReceiver, seed_activity, smtp_server
from tests.integration.test_notify_slack import engine, slack  # noqa: F401
from tests.servers import free_port

BASE = "https://mfx.example.com"
REPO = Path(__file__).resolve().parents[2]


def _headers(receiver: SlackReceiver) -> list[str]:
    return [str(b["blocks"][0]["text"]["text"]) for b in receiver.bodies]


def _run_finished(engine: Engine, key: str, finished: datetime) -> None:
    with Session(engine) as session:
        session.add(
            RemediationRun(
                run_key=key,
                trigger="import_set.succeeded",
                source="usage/day.csv",
                status="done",
                input_rows=4,
                valid=2,
                corrected=1,
                quarantined=1,
                by_code={"timestamp_in_future": {"corrected": 1, "quarantined": 1}},
                created_at=finished,
                finished_at=finished,
            )
        )
        session.commit()


# --- the digest grid -----------------------------------------------------------------------

_TICK_IN_A_CHILD = """
import sys
from datetime import datetime
from service.adapters.channels import build_channels
from service.config import Settings
from service.db import make_engine
from service.notify.digests import DigestSender

db, slack, now = sys.argv[1], sys.argv[2], datetime.fromisoformat(sys.argv[3])
settings = Settings(
    _env_file=None, database_url=db, bucket_url="file:///nonexistent-bucket",
    slack_webhook_url=slack, digest_every=sys.argv[4], digest_tz=sys.argv[5],
)
sender = DigestSender(
    make_engine(db), settings, build_channels(settings), instance="t", clock=lambda: now
)
for o in sender.tick():
    print(o.status, o.window.start.isoformat(), o.window.end.isoformat())
"""


@pytest.mark.parametrize(
    ("every", "tz", "now", "finished"),
    [
        # Paris leaves summer time on 2026-10-25 at 01:00 UTC (03:00 CEST -> 02:00 CET)
        ("1h", "Europe/Paris", "2026-10-25T01:30:00+00:00", "2026-10-25T00:30:00+00:00"),
        # New York on 2026-11-01 at 06:00 UTC (02:00 EDT -> 01:00 EST)
        ("15m", "America/New_York", "2026-11-01T06:20:00+00:00", "2026-11-01T06:05:00+00:00"),
        # a daily digest at 02:30, the hour that happens twice, for the two days after
        ("30 2 * * *", "Europe/Paris", "2026-10-26T08:00:00+00:00", "2026-10-25T12:00:00+00:00"),
    ],
)
def test_a_digest_pass_on_the_night_clocks_go_back_returns_and_sends(
    db_url: str,
    db_engine: Engine,
    slack: tuple[SlackReceiver, str],
    every: str,
    tz: str,
    now: str,
    finished: str,
) -> None:
    """README: `DIGEST_EVERY` "`15m`, `1h`, `1d`… (aligned: `1d` is local midnight, `1h` on
    the hour) or a 5-field crontab" and `DIGEST_TZ` "time zone of the schedule"; "Sends have
    timeouts, so they never stall the worker."

    Instead, when the zone leaves summer time, `DigestSchedule.last_end_at_or_before` loops
    forever: APScheduler's next fire time after the repeated hour's fire is that same fire,
    so `while following <= moment` never ends. The pass spins at 100% CPU holding the digest
    lock (and, on PostgreSQL, the notify advisory lock): no digest of any window is ever sent
    again by any worker until the process is restarted. (Run in a child process, so the
    endless loop can be killed.)"""
    receiver, url = slack
    _run_finished(db_engine, "poller:impset_dst:usage/day.csv", datetime.fromisoformat(finished))
    args = [sys.executable, "-c", _TICK_IN_A_CHILD, db_url, url, now, every, tz]
    child = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = child.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail(f"DIGEST_EVERY={every!r} DIGEST_TZ={tz}: the digest pass at {now} hangs")
    assert child.returncode == 0, err.decode()
    assert out.decode().startswith("sent") and len(receiver.bodies) == 1


@pytest.mark.parametrize(
    ("every", "seed_day", "expected"),
    [
        # crontab: */2 in the weekday field is 0,2,4,6 = Sunday, Tuesday, Thursday, Saturday
        ("0 9 * * */2", datetime(2026, 11, 29, tzinfo=UTC), "2026-11-29 09:00 to 2026-12-01 09:00"),
        # 0-3 is Sunday to Wednesday, as in cron
        ("0 9 * * 0-3", datetime(2026, 11, 30, tzinfo=UTC), "2026-11-30 09:00 to 2026-12-01 09:00"),
        # day of month and weekday both restricted: cron fires when either matches
        ("0 9 1 * 1", datetime(2026, 11, 30, tzinfo=UTC), "2026-11-30 09:00 to 2026-12-01 09:00"),
    ],
)
def test_crontab_weekdays_as_in_cron(
    engine: Engine,
    sqlite_url: str,
    make_settings: Any,
    slack: tuple[SlackReceiver, str],
    every: str,
    seed_day: datetime,
    expected: str,
) -> None:
    """README: DIGEST_EVERY may be "a 5-field crontab such as `0 9 * * 1-5` (weekdays 0/7 =
    Sunday, as in cron)".

    Instead `windows._weekday_names` passes `*/2` through to APScheduler, which counts
    weekdays from Monday = 0 (so `*/2` fires Mon/Wed/Fri/Sun); maps `0-3` to `sun-wed`, which
    APScheduler refuses ("minimum value in a range must not be higher than the maximum"), so
    a valid crontab stops every notification job (`run_notify_jobs` logs `notify.not_started`:
    no digests and no critical alerts); and `0 9 1 * 1` is ANDed (only Mondays that are the
    1st, a few times a year) where cron ORs the two fields. Now is Tuesday 2026-12-01 09:05."""
    receiver, url = slack
    seed_activity(engine, day=seed_day)
    settings = make_settings(
        database_url=sqlite_url, slack_webhook_url=url, mfx_public_url=BASE, digest_every=every
    )
    now = datetime(2026, 12, 1, 9, 5, tzinfo=UTC)
    sender = DigestSender(
        engine, settings, build_channels(settings), instance="t", clock=lambda: now
    )
    sender.tick()
    assert [b["text"][17:53] for b in receiver.bodies] == [expected]


# --- retention -----------------------------------------------------------------------------


def test_retention_shorter_than_the_digest_window_sends_the_digest_once(
    db_engine: Engine, db_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    """README: "Each window of `DIGEST_EVERY` is sent once per channel: a `digest_runs` row
    per (channel, window) is claimed atomically"; `MFX_RETENTION_DAYS` purges "digest
    records" (any positive number of days is accepted).

    Instead, with a weekly digest (`7d`, Monday midnight) and a 3-day retention, the hourly
    purge (`digest_store.purge_digest_runs`: every row whose window ended before the cutoff) deletes
    the only record of the last window; `DigestSender._due_windows` then finds no recorded
    window and claims `latest_window(now)` again: last week's digest is sent again after
    every purge (every hour) until the next window."""
    receiver, url = slack
    seed_activity(db_engine)  # Nov 29, inside the week Nov 23 - Nov 30 (Monday)
    settings = make_settings(
        database_url=db_url,
        slack_webhook_url=url,
        mfx_public_url=BASE,
        digest_every="7d",
        mfx_retention_days=3,
    )
    channels = build_channels(settings)
    sent = DigestSender(db_engine, settings, channels, instance="t", clock=lambda: NOW).tick()
    assert [o.status for o in sent] == ["sent"] and len(receiver.bodies) == 1
    for hours in (4 * 24, 4 * 24 + 1, 5 * 24):  # the hourly retention, then the digest job
        later = NOW + timedelta(hours=hours)
        purge_expired(db_engine, settings.mfx_retention_days, now=later)
        DigestSender(db_engine, settings, channels, instance="t", clock=lambda t=later: t).tick()
    assert len(receiver.bodies) == 1, [b["text"] for b in receiver.bodies]


# --- critical alerts -----------------------------------------------------------------------


def test_a_critical_alert_resolved_while_email_retries_tells_slack_it_resolved(
    db_engine: Engine, db_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    """README: critical alerts "are sent on every configured channel, once per incident
    however often it recurs, and once more when resolved. A channel that fails is retried
    with backoff without repeating the message on the channels that already have it".

    Instead: Slack got "CRITICAL: …", email failed and waits for its retry; the alert is then
    resolved (heartbeats resumed). `store.critical_alerts_to_notify` wants the "raised" phase
    only for unresolved alerts and the "resolved" phase only for alerts whose `notified_at`
    is set, which it never is: the Slack channel is never told the incident is over (and
    email never hears of it at all), though SMTP is back."""
    receiver, url = slack
    port = free_port()
    settings = make_settings(database_url=db_url, slack_webhook_url=url, mfx_public_url=BASE)

    def channels(smtp_port: int) -> list[Any]:
        target = SmtpTarget.parse(f"smtp://127.0.0.1:{smtp_port}")
        email = EmailChannel(target, "m@example.com", ["ops@example.com"], sleep=lambda _: None)
        return [SlackChannel(url, sleep=lambda _: None), email]

    key = "heartbeat.silent:worker"
    raise_alert(
        db_engine,
        key=key,
        severity="critical",
        kind="heartbeat.silent",
        subject="no worker heartbeat for more than 300 s",
        message="last beat 400 s ago",
    )
    now = datetime.now(UTC)
    assert send_critical_alerts(db_engine, settings, channels(port), clock=lambda: now) == 0
    assert _headers(receiver) == ["CRITICAL: no worker heartbeat for more than 300 s"]
    assert resolve_alert(db_engine, key)  # heartbeats resumed
    with smtp_server() as (_mailbox, smtp_port):  # SMTP is back too
        for minutes in (5, 65, 185):
            later = now + timedelta(minutes=minutes)
            send_critical_alerts(db_engine, settings, channels(smtp_port), clock=lambda t=later: t)
    assert _headers(receiver) == [
        "CRITICAL: no worker heartbeat for more than 300 s",
        "Resolved: no worker heartbeat for more than 300 s",
    ]


def test_an_incident_reopened_while_its_message_is_being_sent_is_sent_too(
    db_engine: Engine, db_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    """README: "a resolved alert raised again is a new incident", and critical alerts are
    sent "once per incident however often it recurs, and once more when resolved".

    Instead: while the first incident's Slack message is in flight (a slow Slack, a 429
    wait), the alert is resolved and raised again. `critical._send` then records the old
    incident's delivery with `store.record_notification`, which matches the row by id and
    `notified_at IS NULL` only: it marks the NEW incident notified (and writes back the old
    detail). The second incident is never sent, nor is the first one's resolution."""
    receiver, url = slack
    settings = make_settings(database_url=db_url, slack_webhook_url=url, mfx_public_url=BASE)
    channels = [SlackChannel(url, sleep=lambda _: None)]
    key = "inbox.dead_letter:evt_flap"

    def raise_it(n: int) -> None:
        raise_alert(
            db_engine,
            key=key,
            severity="critical",
            kind="inbox.dead_letter",
            subject="Stripe event evt_flap (v1.billing.meter.no_meter_found) dead-lettered",
            message=f"incident {n}",
        )

    raise_it(1)
    gate = receiver.gate = threading.Event()
    sending = threading.Thread(
        target=send_critical_alerts, args=(db_engine, settings, channels), daemon=True
    )
    sending.start()
    assert receiver.entered.wait(5)
    assert resolve_alert(db_engine, key)  # replayed by hand and done...
    raise_it(2)  # ...dead again: a new incident
    gate.set()
    sending.join(15)
    later = datetime.now(UTC) + timedelta(minutes=1)
    send_critical_alerts(db_engine, settings, channels, clock=lambda: later)
    send_critical_alerts(db_engine, settings, channels, clock=lambda: later)
    raised = [h for h in _headers(receiver) if h.startswith("CRITICAL:")]
    with Session(db_engine) as session:
        alert = session.exec(select(Alert)).one()
    assert (alert.status, alert.message) == ("open", "incident 2")
    assert len(raised) == 2, _headers(receiver)


def test_a_file_name_with_a_line_break_still_reaches_email(
    engine: Engine, sqlite_url: str, make_settings: Any
) -> None:
    """README: critical alerts (among them "the poller giving up on a file") "within seconds
    of being raised ... are sent on every configured channel".

    Instead the alert's subject starts with the object key, which may hold any character
    (an S3 key, a file name); with a line break in it `EmailChannel.build` puts the subject
    into the `Subject` header as it is and `email.message` refuses it ("Header values may
    not contain linefeed or carriage return characters"). The ValueError is raised outside
    the SMTP retry, counted as a failure on every pass, and after 8 the message is given up:
    the critical alert never reaches email."""
    with smtp_server() as (mailbox, port):
        settings = make_settings(
            database_url=sqlite_url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            digest_email_to="ops@example.com",
            mfx_public_url=BASE,
        )
        key = "exports/acme\r\nnorth/2026-11-29.csv"
        obj = ObjectInfo(key=key, etag="e1", size=10, last_modified=NOW)
        now = datetime.now(UTC)
        raise_gave_up(
            engine,
            obj,
            Verdict(True, "permanent", None, now),
            "HTTP 400: invalid_request_error",
            ObjectProgress(object_id=1, first_seen=now),
            6 * 3600,
            now,
        )
        for hours in range(12):
            later = now + timedelta(hours=hours)
            send_critical_alerts(
                engine, settings, build_channels(settings), clock=lambda t=later: t
            )
        subjects = [str(m["Subject"]) for _, _, m in mailbox.received]
    assert len(subjects) == 1 and "exports/acme" in subjects[0]


def test_twenty_alerts_backing_off_on_email_hold_no_new_critical_alert_off_slack(
    db_engine: Engine, db_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    """README: "Critical alerts do not wait for the digest: within seconds of being raised
    they are sent on every configured channel ... A channel that fails is retried with
    backoff".

    Instead `send_critical_alerts` asks `store.critical_alerts_to_notify` for the 20 oldest
    unsent alerts (BATCH) and skips the ones backing off in Python (`_send` returns 0 before
    `next_at`). With SMTP down and 20 critical alerts waiting for their email retry (a burst
    of dead letters), a new critical alert is never selected: it does not reach Slack, which
    works, until the older ones are sent or given up after 8 attempts (about an hour)."""
    receiver, url = slack
    settings = make_settings(database_url=db_url, slack_webhook_url=url, mfx_public_url=BASE)
    nobody = SmtpTarget.parse(f"smtp://127.0.0.1:{free_port()}")  # SMTP is down
    channels = [
        SlackChannel(url, sleep=lambda _: None),
        EmailChannel(nobody, "m@example.com", ["ops@example.com"], sleep=lambda _: None),
    ]

    def dead_letter(n: int) -> None:
        raise_alert(
            db_engine,
            key=f"inbox.dead_letter:evt_{n}",
            severity="critical",
            kind="inbox.dead_letter",
            subject=f"Stripe event evt_{n} (v1.billing.meter.error_report_triggered) dead-lettered",
            message="gave up after 8 attempts: HTTP 401",
        )

    for n in range(20):
        dead_letter(n)
    now = datetime.now(UTC)
    send_critical_alerts(db_engine, settings, channels, clock=lambda: now)
    assert len(receiver.bodies) == 20  # on Slack; email waits for its retry
    raise_alert(
        db_engine,
        key="heartbeat.silent:worker",
        severity="critical",
        kind="heartbeat.silent",
        subject="no worker heartbeat for more than 300 s",
        message="last beat 400 s ago",
    )
    for seconds in (5, 10, 15):
        later = now + timedelta(seconds=seconds)
        send_critical_alerts(db_engine, settings, channels, clock=lambda t=later: t)
    assert "CRITICAL: no worker heartbeat for more than 300 s" in _headers(receiver)


class _RefusingMailbox:
    """An SMTP server's handler that accepts ops@ and refuses billing@ (550)."""

    def __init__(self) -> None:
        self.received: list[list[str]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("billing@"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(list(envelope.rcpt_tos))
        return "250 OK"


def test_a_refused_digest_recipient_is_named_not_dropped_silently(
    engine: Engine, sqlite_url: str, make_settings: Any
) -> None:
    """README: `DIGEST_EMAIL_TO` is the "comma-separated recipients"; "A failed send (SMTP
    down, ...) is retried ... each failure is recorded on the row with its reason, then a
    warning alert."

    Instead, when the server refuses one of the recipients (550) and accepts another,
    `EmailChannel._deliver` ignores what `smtplib.send_message` returns (the refused
    recipients): the digest row is `sent` with no error, no alert is raised, and billing@
    never gets a digest (nor any critical alert) without anyone being told."""
    handler = _RefusingMailbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        seed_activity(engine)
        settings = make_settings(
            database_url=sqlite_url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            digest_email_to="ops@example.com, billing@example.com",
            digest_email_from="meterfix@example.com",
            mfx_public_url=BASE,
        )
        sender = DigestSender(
            engine, settings, build_channels(settings), instance="t", clock=lambda: NOW
        )
        sender.tick()
    finally:
        controller.stop()
    assert handler.received == [["ops@example.com"]]  # billing@ got nothing
    with Session(engine) as session:
        [row] = session.exec(select(DigestRun)).all()
        alerts = session.exec(select(Alert).where(Alert.kind == "digest.failed")).all()
    told = "billing@example.com" in (row.last_error or "") or bool(alerts)
    assert told, (row.status, row.last_error)


def test_an_object_key_starting_with_http_is_shown_as_data_not_a_link(
    engine: Engine, sqlite_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    """README: alerts carry "links (run, import set, corrected objects, quarantine file,
    event)"; docs/architecture.md: "the service calls only configured hosts, never a URL
    taken from an event payload", and Slack messages are Block Kit mrkdwn.

    Instead `render._value` (and the `value.startswith("http")` test in alert.html) takes
    any link value whose text starts with "http" for a URL: the poller's object key
    `http_logs/acme|north.csv` (a folder of API-request usage) becomes the Slack link
    `<http_logs/acme|north.csv|…>`, whose unescaped `|` cuts it into a link to
    `http_logs/acme` labelled `north.csv|…`, and the email's `<a href="http_logs/…">`, a
    relative link to nothing. Object keys are data, shown as code like every other key."""
    receiver, url = slack
    with smtp_server() as (mailbox, port):
        settings = make_settings(
            database_url=sqlite_url,
            slack_webhook_url=url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            digest_email_to="ops@example.com",
            mfx_public_url=BASE,
        )
        key = "http_logs/acme|north.csv"
        now = datetime.now(UTC)
        obj = ObjectInfo(key=key, etag="e1", size=10, last_modified=now)
        raise_gave_up(
            engine,
            obj,
            Verdict(True, "permanent", None, now),
            "HTTP 400: invalid_request_error",
            ObjectProgress(object_id=1, first_seen=now),
            6 * 3600,
            now,
        )
        assert send_critical_alerts(engine, settings, build_channels(settings)) == 1
        [(_, _, email)] = mailbox.received
    html = email.get_body(("html",)).get_content()
    texts = [
        b["text"]["text"]
        for b in receiver.bodies[0]["blocks"]
        if b.get("text", {}).get("type") == "mrkdwn"
    ]
    [objects] = [t for t in texts if "objects" in t]
    assert "<http_logs" not in objects, objects
    assert 'href="http_logs' not in html
