# ruff: noqa: F811  (fixtures imported from the modules that define them)
"""Stripe error reports meterfix could not act on (`unmatched`: none of its rows is ours;
`partial`: found in part), named in the digest of their window: per meter, the reports, the
failed records Stripe counted and the error codes, with a link to the dashboard's error
reports. Real SMTP (aiosmtpd), the local Slack receiver, the sandbox for the end-to-end case,
SQLite and PostgreSQL. Each test failed on the code before the change (docstrings say how)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from service.adapters.channels import build_channels
from service.models import Alert, ErrorReport, ErrorTypeCount
from service.notify.digests import DigestSender
from service.notify.windows import Window
from tests.integration.notify_helpers import (
    DAY,
    NOW,
    SMTP_PASSWORD,
    SMTP_USER,
    SlackReceiver,
    seed_activity,
    smtp_server,
)
from tests.integration.test_notify_slack import slack  # noqa: F401
from tests.integration.test_remediation_tasks import Service, service  # noqa: F401
from tests.integration.test_report_edges import HEADER, _bucket, _imported, _report

BASE = "https://mfx.example.com"
# the dashboard's reports left in the window (test_reports_view_filters.py follows the links)
IN_WINDOW = "since=2026-11-29T00%3A00%3A00Z&until=2026-11-29T23%3A59%3A59.999999Z"
REPORTS_PAGE = f"{BASE}/runs?view=reports&status=unmatched%2Cpartial&{IN_WINDOW}"


def _page_of(status: str, meter: str | None) -> str:
    """The link of a status x meter line: that status and meter's reports in the window."""
    of_meter = f"meter={meter}" if meter else "no_meter=yes"
    return f"{BASE}/runs?view=reports&status={status}&{of_meter}&{IN_WINDOW}"


TRIGGERED = "v1.billing.meter.error_report_triggered"
NOT_FOUND = "meter_event_customer_not_found"
TOO_OLD = "timestamp_too_far_in_past"
HOUR = timedelta(hours=1)


def _seed_report(
    engine: Engine,
    event_id: str,
    status: str,
    meter: str | None,
    codes: dict[str, int],
    created: datetime,
    concluded: datetime | None = None,
) -> None:
    """A report as the worker records it; `concluded`: when its task found it `partial` (its
    `error_report.partial:<event id>` warning, raised then)."""
    with Session(engine) as session:
        report = ErrorReport(
            event_id=event_id,
            event_type=TRIGGERED if meter else "v1.billing.meter.no_meter_found",
            meter_id=meter,
            error_count=sum(codes.values()),
            status=status,
            summary="Stripe's summary",
            created_at=created,
        )
        session.add(report)
        session.flush()
        assert report.id is not None
        for code, count in codes.items():
            session.add(ErrorTypeCount(report_id=report.id, code=code, error_count=count))
        if concluded is not None:
            session.add(
                Alert(
                    alert_key=f"error_report.partial:{event_id}",
                    severity="warning",
                    kind="error_report.partial",
                    subject=f"report {event_id}: found 1 of 3 reported rows",
                    message="",
                    created_at=concluded,
                    last_seen_at=concluded,
                )
            )
        session.commit()


def _seed_window(engine: Engine) -> None:
    """The reports of the window DAY..DAY+1d, and around it."""
    _seed_report(engine, "evt_u1", "unmatched", "mtr_api", {NOT_FOUND: 4, TOO_OLD: 1}, DAY + HOUR)
    _seed_report(engine, "evt_u2", "unmatched", "mtr_api", {NOT_FOUND: 2}, DAY + 2 * HOUR)
    _seed_report(engine, "evt_u3", "unmatched", None, {"no_meter": 1}, DAY + 3 * HOUR)
    _seed_report(
        engine, "evt_p1", "partial", "mtr_api", {NOT_FOUND: 3}, DAY + 4 * HOUR, DAY + 5 * HOUR
    )
    # recorded the day before, found partial after midnight: this window's news
    _seed_report(engine, "evt_p2", "partial", "mtr_api", {NOT_FOUND: 2}, DAY - HOUR, DAY + HOUR / 6)
    # not this window's: remediated, still being linked, the day before, found partial later
    _seed_report(engine, "evt_r", "remediated", "mtr_api", {NOT_FOUND: 9}, DAY + 6 * HOUR)
    _seed_report(engine, "evt_c", "recorded", "mtr_api", {NOT_FOUND: 9}, DAY + 7 * HOUR)
    _seed_report(engine, "evt_old", "unmatched", "mtr_api", {NOT_FOUND: 9}, DAY - 2 * HOUR)
    late = DAY + timedelta(hours=23, minutes=59)
    _seed_report(engine, "evt_late", "partial", "mtr_api", {NOT_FOUND: 9}, late, late + HOUR)


LINES = [
    f"  unmatched / mtr_api: 2 reports, 7 failed records: {NOT_FOUND} x6, {TOO_OLD} x1  "
    + _page_of("unmatched", "mtr_api"),
    "  unmatched / (no meter): 1 report, 1 failed record: no_meter x1  "
    + _page_of("unmatched", None),
    f"  partial / mtr_api: 2 reports, 5 failed records: {NOT_FOUND} x5  "
    + _page_of("partial", "mtr_api"),
]


def _email_settings(make_settings: Any, db_url: str, port: int, **extra: Any) -> Any:
    return make_settings(
        database_url=db_url,
        smtp_url=f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{port}",
        digest_email_to="ops@example.com",
        mfx_public_url=BASE,
        **extra,
    )


def _mailed_digest(
    engine: Engine, make_settings: Any, db_url: str, now: datetime = NOW, **extra: Any
) -> tuple[str, str, str]:
    """(subject, plain text, HTML) of the digest due at `now`, sent by email."""
    with smtp_server() as (mailbox, port):
        settings = _email_settings(make_settings, db_url, port, **extra)
        sender = DigestSender(
            engine, settings, build_channels(settings), instance="t", clock=lambda: now
        )
        assert [o.status for o in sender.tick()] == ["sent"]
    [(_, _, message)] = mailbox.received
    plain = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    return str(message["Subject"]), plain, html


def _slack_texts(receiver: SlackReceiver) -> str:
    return "\n".join(
        block["text"]["text"]
        for body in receiver.bodies
        for block in body["blocks"]
        if block["type"] == "section" and "text" in block
    )


def _slack_sender(engine: Engine, make_settings: Any, db_url: str, url: str) -> DigestSender:
    settings = make_settings(database_url=db_url, slack_webhook_url=url, mfx_public_url=BASE)
    return DigestSender(engine, settings, build_channels(settings), instance="t", clock=lambda: NOW)


def test_reports_left_unmatched_or_partial_are_listed_per_meter_by_email(
    db_engine: Engine, db_url: str, make_settings: Any
) -> None:
    """Billing engineers must see what happened: an error report meterfix could not link to
    its rows (`unmatched`: revenue that leaks and that nobody will fix) or found only in part
    (`partial`). The digest said nothing of them: they were only warnings, counted in no
    line of the digest (only as "alerts"), never named."""
    seed_activity(db_engine)
    _seed_window(db_engine)
    subject, plain, html = _mailed_digest(db_engine, make_settings, db_url)

    assert subject.endswith(
        ": 3 corrected, 3 quarantined, 5 Stripe error reports not remediated"
    ), subject
    heading = f"Stripe error reports not remediated: 5 reports, 13 failed records  {REPORTS_PAGE}"
    assert heading in plain, plain
    at = plain.index(heading)
    assert plain[at:].splitlines()[1:4] == LINES
    for left_out in ("x9", "Stripe's summary"):  # the reports not left in this window
        assert left_out not in plain
    for page in (REPORTS_PAGE, _page_of("unmatched", None), _page_of("partial", "mtr_api")):
        assert f'href="{page.replace("&", "&amp;")}"' in html, page
    for cell in (
        ">unmatched<",
        ">mtr_api<",
        ">(no meter)<",
        ">partial<",
        f">{NOT_FOUND} x6, {TOO_OLD} x1<",
        f">{NOT_FOUND} x5<",
        ">no_meter x1<",
    ):
        assert cell in html, cell
    assert "x9" not in html


def test_reports_left_unmatched_or_partial_are_listed_on_slack(
    db_engine: Engine, db_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    """The same list in Block Kit: a section whose title links to the error reports page."""
    receiver, url = slack
    seed_activity(db_engine)
    _seed_window(db_engine)
    assert [o.status for o in _slack_sender(db_engine, make_settings, db_url, url).tick()] == [
        "sent"
    ]
    texts = _slack_texts(receiver)
    title = f"*<{REPORTS_PAGE}|Stripe error reports not remediated>*: 5 reports, 13 failed records"
    assert title in texts, texts
    lines = texts[texts.index(title) :].splitlines()[1:4]
    assert lines == [
        f"• <{_page_of('unmatched', 'mtr_api')}|unmatched> / `mtr_api`: 2 reports, "
        f"7 failed records: `{NOT_FOUND}` ×6, `{TOO_OLD}` ×1",
        f"• <{_page_of('unmatched', None)}|unmatched> / (no meter): 1 report, "
        "1 failed record: `no_meter` ×1",
        f"• <{_page_of('partial', 'mtr_api')}|partial> / `mtr_api`: 2 reports, "
        f"5 failed records: `{NOT_FOUND}` ×5",
    ]
    assert "×9" not in texts


def test_a_window_whose_only_news_is_an_unmatched_report_is_sent(
    db_engine: Engine, db_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    """A window where no run finished and no alert was raised, but a report was left
    unmatched (as the report's task leaves one whose rows are no longer indexed: no warning is
    raised then), was recorded `empty` and sent nothing: the report reached nobody."""
    receiver, url = slack
    _seed_report(db_engine, "evt_only", "unmatched", "mtr_api", {NOT_FOUND: 3}, DAY + 9 * HOUR)
    outcomes = _slack_sender(db_engine, make_settings, db_url, url).tick()
    assert [o.status for o in outcomes] == ["sent"]
    texts = _slack_texts(receiver)
    line = f"• <{_page_of('unmatched', 'mtr_api')}|unmatched> / `mtr_api`: 1 report, "
    assert line + f"3 failed records: `{NOT_FOUND}` ×3" in texts


def test_more_meters_than_the_digest_lists_are_summed_in_one_line(
    db_engine: Engine, db_url: str, make_settings: Any
) -> None:
    """Seven meters: the five with most failed records are listed, then "and 2 more" with
    what they hold (a list without end would bury the rest of the digest); a line names at
    most five codes."""
    for n in range(7):
        codes = {NOT_FOUND: 20 - n, **{f"code_{c}": 1 for c in range(6 if n == 0 else 0)}}
        _seed_report(db_engine, f"evt_{n}", "unmatched", f"mtr_{n}", codes, DAY + (6 - n) * HOUR)
    _, plain, html = _mailed_digest(db_engine, make_settings, db_url)
    at = plain.index("Stripe error reports not remediated: 7 reports, 125 failed records")
    lines = plain[at:].splitlines()[1:7]
    assert [line.split(":")[0] for line in lines[:5]] == [
        f"  unmatched / mtr_{n}" for n in range(5)
    ]
    assert lines[0] == (
        f"  unmatched / mtr_0: 1 report, 26 failed records: {NOT_FOUND} x20, code_0 x1, "
        "code_1 x1, code_2 x1, code_3 x1, 2 more codes  " + _page_of("unmatched", "mtr_0")
    )
    assert lines[5] == "  and 2 more: 2 reports, 29 failed records"
    assert "mtr_5" not in plain and "mtr_6" not in plain
    assert "and 2 more: 2 reports, 29 failed records" in html


def test_report_values_are_shown_as_text_everywhere(
    db_engine: Engine, db_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    """A meter id and an error code come from Stripe's event: untrusted text. Written as the
    digest writes every value: escaped in HTML, on one line in plain text, and in Slack
    neither a mention nor a link nor mrkdwn."""
    receiver, url = slack
    meter = "mtr_<!channel>*bold*\nDashboard: https://evil.example"
    code = "<script>x</script>\u202e|<https://evil.example|ok>"
    _seed_report(db_engine, "evt_h", "unmatched", meter, {code: 2}, DAY + HOUR)
    _, plain, html = _mailed_digest(db_engine, make_settings, db_url)
    assert "\nDashboard: https://evil" not in plain
    assert "mtr_<!channel>*bold*[U+000A]Dashboard: https://evil.example" in plain
    assert "[U+202E]" in plain and "\u202e" not in plain
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;[U+202E]" in html
    assert "<!channel>" not in html

    assert [o.status for o in _slack_sender(db_engine, make_settings, db_url, url).tick()] == [
        "sent"
    ]
    texts = _slack_texts(receiver)
    assert "<!channel>" not in texts and "<https://evil" not in texts
    assert "`mtr_&lt;!channel&gt;*bold*[U+000A]Dashboard: https://evil.example`" in texts
    assert "`&lt;script&gt;x&lt;/script&gt;[U+202E]|&lt;https://evil.example|ok&gt;` ×2" in texts


def test_reports_the_worker_left_unmatched_and_partial_reach_the_digest(
    service: Service, make_settings: Any
) -> None:
    """End to end: Stripe (the sandbox) reports rows none of which is ours (left `unmatched`
    when recorded) and rows of which one object became unreadable (found in part by the
    report's task, `partial`); the digest of the window names both, per meter."""
    now = int(time.time()) - 60
    bucket = _bucket(service)
    (bucket / "a.csv").write_text(HEADER + f"a1,{now},api_requests,acme-42,5\n")
    (bucket / "b.csv").write_text(HEADER + f"b1,{now},api_requests,acme-42,7\n")
    _imported(service, "a.csv", ["a1"])
    _imported(service, "b.csv", ["b1"])
    (bucket / "a.csv").write_text("")
    _imported(service, "a.csv", [], status="unreadable")
    service.deliver(_report(service, ["a1", "b1"]))
    service.deliver(_report(service, ["zz1", "zz2", "zz3"]))
    service.drain()
    reports: list[Any] = service.rows(ErrorReport)
    assert sorted(r.status for r in reports) == ["partial", "unmatched"]

    meter = service.sandbox.admin.meters()[0]["id"]
    start = datetime.now(UTC).replace(microsecond=0) - HOUR
    with smtp_server() as (mailbox, port):
        settings = _email_settings(make_settings, service.settings.database_url, port)
        sender = DigestSender(service.engine, settings, build_channels(settings), instance="t")
        assert [o.status for o in sender.send_now(Window(start, start + 2 * HOUR))] == ["sent"]
    [(_, _, message)] = mailbox.received
    plain = message.get_body(("plain",)).get_content()
    assert "Stripe error reports not remediated: 2 reports, 5 failed records" in plain, plain
    assert f"  unmatched / {meter}: 1 report, 3 failed records: {NOT_FOUND} x3" in plain
    assert f"  partial / {meter}: 1 report, 2 failed records: {NOT_FOUND} x2" in plain
