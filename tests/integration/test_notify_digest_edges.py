# ruff: noqa: F811  (fixtures imported from the module that defines them)
"""Digests at their edges: a cadence changed under recorded windows, and what a digest's
quarantine links open against what it counts. Against a local Slack incoming-webhook
receiver and SQLite (and PostgreSQL when MFX_TEST_DATABASE_URL is set). Each test failed on
the code before its fix (the docstrings say what went wrong)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import Engine
from sqlmodel import Session, select

from service.adapters.channels import build_channels
from service.models import QuarantinedRow, RemediationRun
from service.models._types import as_utc
from service.models.alerts import DigestRun
from service.notify.digests import DigestSender
from service.notify.windows import Window
from service.web.params import page, quarantine_filter
from service.web.quarantine import list_quarantine
from tests.integration.notify_helpers import SlackReceiver
from tests.integration.test_notify_slack import slack  # noqa: F401

BASE = "https://mfx.example.com"
DAY = datetime(2026, 11, 29, tzinfo=UTC)  # the day the cadence changes, at 10:30 (UTC)
HOUR = timedelta(hours=1)


def _sender(engine: Engine, make_settings: Any, db_url: str, url: str, now: datetime) -> Any:
    settings = make_settings(
        database_url=db_url, slack_webhook_url=url, mfx_public_url=BASE, digest_every="1d"
    )
    return DigestSender(engine, settings, build_channels(settings), instance="t", clock=lambda: now)


def _run(engine: Engine, key: str, started: datetime, finished: datetime, quarantined: int) -> int:
    """A done run that quarantined `quarantined` rows (code timestamp_in_future), each row
    quarantined when the run started (rows are quarantined while a run reads its file)."""
    with Session(engine) as session:
        run = RemediationRun(
            run_key=key,
            trigger="import_set.succeeded",
            source=f"usage/{key}.csv",
            status="done",
            input_rows=quarantined + 1,
            valid=1,
            corrected=0,
            quarantined=quarantined,
            by_code={"timestamp_in_future": {"corrected": 0, "quarantined": quarantined}},
            created_at=started,
            finished_at=finished,
        )
        session.add(run)
        session.flush()
        assert run.id is not None
        for n in range(quarantined):
            session.add(
                QuarantinedRow(
                    run_id=run.id,
                    source=f"usage/{key}.csv",
                    row_number=n + 1,
                    identifier=f"{key}-{n}",
                    code="timestamp_in_future",
                    reason="timestamp too far ahead",
                    meter="api_requests",
                    customer="cus_A",
                    record={"identifier": f"{key}-{n}"},
                    created_at=started,
                )
            )
        session.commit()
        return run.id


# --- a cadence changed -----------------------------------------------------------------------


def test_switching_from_hourly_to_daily_sends_the_first_day_whole(
    db_engine: Engine, db_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    """README: "Each window of `DIGEST_EVERY` is sent once per channel" (`1d` is local
    midnight, `1h` on the hour).

    Instead, after `DIGEST_EVERY` went from `1h` to `1d` at 10:30, the day's hourly digest
    row starting at midnight held the daily window's start: `digest_runs` is unique on
    (channel, window_start), so the daily window's claim was ignored and that day's digest
    was never sent (the runs of 10:00 to midnight reached nobody)."""
    receiver, url = slack
    with Session(db_engine) as session:
        for hour in range(10):  # hourly digests sent from midnight to 10:00
            start = DAY + hour * HOUR
            session.add(
                DigestRun(
                    channel="slack", window_start=start, window_end=start + HOUR, status="sent"
                )
            )
        session.commit()
    _run(db_engine, "early", DAY + timedelta(minutes=20), DAY + timedelta(minutes=30), 1)
    _run(db_engine, "late", DAY + 15 * HOUR, DAY + 15 * HOUR + timedelta(minutes=5), 2)
    switched = DAY + timedelta(hours=10, minutes=30)
    first = _sender(db_engine, make_settings, db_url, url, switched).tick()
    assert [(o.window.start, o.status) for o in first] == [(DAY - timedelta(days=1), "empty")]

    next_day = DAY + timedelta(days=1, minutes=1)
    outcomes = _sender(db_engine, make_settings, db_url, url, next_day).tick()
    assert [(o.window.start, o.window.end, o.status) for o in outcomes] == [
        (DAY, DAY + timedelta(days=1), "sent")
    ]
    [body] = receiver.bodies
    assert body["text"].startswith("meterfix digest, 2026-11-29 00:00 to 2026-11-30 00:00")
    assert body["blocks"][1]["fields"][3]["text"].startswith("*Quarantined*\n3")  # both runs
    with Session(db_engine) as session:
        row = session.exec(
            select(DigestRun).where(DigestRun.window_end == DAY + timedelta(days=1))
        ).one()
    totals: Any = row.summary["totals"]
    assert (as_utc(row.window_start), row.status, totals["runs"]) == (DAY, "sent", 2)
    assert _sender(db_engine, make_settings, db_url, url, next_day + HOUR).tick() == []


# --- quarantine links ------------------------------------------------------------------------


def _linked_rows(engine: Engine, link: str) -> set[str]:
    """The identifiers the quarantine page lists for a digest's link (its own filter)."""
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    listing = list_quarantine(engine, quarantine_filter(query), page({}))
    return {str(row["identifier"]) for row in listing.data}


def test_a_quarantine_link_opens_the_rows_the_digest_counts(
    db_engine: Engine, db_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    """README: "A digest holds, for its window: rows received / valid / corrected /
    quarantined ...; per error code, corrected and quarantined rows ... Every line links to
    its dashboard page: ... `/quarantine?code=&meter=&customer=`".

    Instead, the digest counts the rows of the runs that finished in the window, while its
    quarantine links filtered rows by when they were quarantined (`since`/`until` the
    window): a run that started at 23:50 the day before and finished at 00:10 is counted
    ("2 quarantined") but its link opened none of its rows, and showed the rows of a run
    still going at midnight that the digest does not count."""
    receiver, url = slack
    counted = DAY - timedelta(minutes=10)
    _run(db_engine, "counted", counted, DAY + timedelta(minutes=10), 2)
    _run(db_engine, "unfinished", DAY + 23 * HOUR, DAY + timedelta(days=1, minutes=5), 1)
    now = DAY + timedelta(days=1, minutes=30)
    assert [o.status for o in _sender(db_engine, make_settings, db_url, url, now).tick()] == [
        "sent"
    ]
    [body] = receiver.bodies
    texts = "\n".join(b["text"]["text"] for b in body["blocks"] if "text" in b)
    assert "`timestamp_in_future` (<" in texts and "|rows>): 0 corrected, 2 quarantined" in texts
    links = [part.split("|")[0] for part in texts.split("<") if "/quarantine?" in part]
    waiting = f"{BASE}/quarantine?taken_again=no"  # the rows waiting now, not the window's
    assert links.pop(0) == waiting
    assert len(links) == 3  # by code, by code x meter x customer, by reason
    for link in links:
        assert _linked_rows(db_engine, link) == {"counted-0", "counted-1"}, link


def test_a_row_quarantined_at_a_window_end_is_linked_from_one_digest_only(
    db_engine: Engine, db_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    """README: a digest holds its window's rows, and each line links to
    `/quarantine?code=&meter=&customer=`; windows follow one another ("Each window of
    `DIGEST_EVERY` is sent once").

    Instead, where several runs quarantined rows in a window (no `run=` link), the links
    filtered by `until=<window end>`, which the quarantine filter takes as inclusive: a row
    quarantined exactly at midnight was opened by the link of the day before and by the link
    of the day it belongs to (its run finished after midnight)."""
    _, url = slack
    _run(db_engine, "morning", DAY + 8 * HOUR, DAY + 9 * HOUR, 1)
    _run(db_engine, "evening", DAY + 20 * HOUR, DAY + 21 * HOUR, 1)
    _run(db_engine, "midnight", DAY + 24 * HOUR, DAY + timedelta(hours=24, minutes=5), 1)
    _run(db_engine, "noon", DAY + 36 * HOUR, DAY + 37 * HOUR, 1)
    sender = _sender(db_engine, make_settings, db_url, url, DAY + timedelta(days=3))
    day_links = []
    for start in (DAY, DAY + timedelta(days=1)):
        digest = sender.collect(Window(start, start + timedelta(days=1)))
        [line] = digest.codes
        day_links.append(_linked_rows(db_engine, line.url))
    assert day_links == [{"morning-0", "evening-0"}, {"midnight-0", "noon-0"}]


def test_an_hourly_digest_still_retrying_is_not_taken_over_by_the_daily_one(
    db_engine: Engine, db_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    """README: a failed send "is retried ... 30 s later, doubling up to an hour, 8 times;
    each failure is recorded on the row with its reason". The daily window that now starts
    where that hourly row does must neither erase the retry nor be lost: it waits for the
    hourly row to finish, then is sent (checked with the fix for the cadence change)."""
    receiver, url = slack
    now = DAY + timedelta(days=1, minutes=1)
    with Session(db_engine) as session:
        session.add(
            DigestRun(
                channel="slack",
                window_start=DAY,
                window_end=DAY + HOUR,
                status="failed",
                attempts=3,
                last_error="HTTP 503",
                next_attempt_at=now + timedelta(minutes=30),
            )
        )
        session.commit()
    _run(db_engine, "late", DAY + 15 * HOUR, DAY + 16 * HOUR, 1)
    assert _sender(db_engine, make_settings, db_url, url, now).tick() == []
    with Session(db_engine) as session:
        [row] = session.exec(select(DigestRun)).all()
        assert (as_utc(row.window_end), row.status, row.attempts) == (DAY + HOUR, "failed", 3)
        row.status, row.next_attempt_at = "sent", None  # its retry went out meanwhile
        session.add(row)
        session.commit()
    later = _sender(db_engine, make_settings, db_url, url, now + timedelta(minutes=1)).tick()
    assert [(o.window.end, o.status) for o in later] == [(DAY + timedelta(days=1), "sent")]
    assert len(receiver.bodies) == 1


def test_a_code_whose_rows_were_all_corrected_links_to_no_empty_quarantine_list(
    db_engine: Engine,
) -> None:
    """Found walking the README as a new user: every per-code line linked to the quarantine
    filtered by its code, a code whose rows were all corrected too: its link opened an empty
    list ("No quarantined rows"), read as something gone missing. Such a line has no link; a
    code with quarantined rows keeps its own."""
    from service.notify.content import collect_digest

    run_id = _run(db_engine, "mixed", DAY + HOUR, DAY + 2 * HOUR, 1)
    with Session(db_engine) as session:
        run = session.get(RemediationRun, run_id)
        assert run is not None
        run.by_code = {
            "timestamp_in_future": {"corrected": 0, "quarantined": 1},
            "meter_event_customer_not_found": {"corrected": 3, "quarantined": 0},
        }
        session.add(run)
        session.commit()
    window = Window(DAY, DAY + timedelta(days=1))
    digest = collect_digest(db_engine, window, public_url=BASE, examples=False)
    urls = {line.code: line.url for line in digest.codes}
    assert urls["meter_event_customer_not_found"] is None
    assert _linked_rows(db_engine, urls["timestamp_in_future"] or "") == {"mixed-0"}


def test_groups_past_the_ten_shown_are_said_in_every_form(db_engine: Engine) -> None:
    """A digest of 13 quarantined groups listed 10 and said nothing of the other 3 (a
    `timestamp_too_far_in_past` group among those left out, in a probe); Slack's run lines
    left out `valid`, which the text and the HTML email say."""
    import json

    from service.notify.content import collect_digest
    from service.notify.render import render_digest

    for n in range(13):
        run_id = _run(db_engine, f"g{n:02d}", DAY + HOUR, DAY + 2 * HOUR, 13 - n)
        with Session(db_engine) as session:
            for row in session.exec(select(QuarantinedRow).where(QuarantinedRow.run_id == run_id)):
                row.code = f"code_{n:02d}"
                session.add(row)
            session.commit()
    window = Window(DAY, DAY + timedelta(days=1))
    digest = collect_digest(db_engine, window, public_url=BASE, examples=False)
    assert [g.code for g in digest.groups] == [f"code_{n:02d}" for n in range(10)]
    assert digest.groups_more == (3, 3 + 2 + 1)
    message = render_digest(digest)
    assert "  and 3 more groups: 6 rows\n" in message.text
    assert ">and 3 more groups</td>" in message.html and ">6</td></tr>" in message.html
    slack = json.dumps(message.slack, ensure_ascii=False)
    assert "• and 3 more groups: 6 rows" in slack
    assert "14 received, 1 valid, 0 corrected, 13 quarantined" in slack
