"""The error reports view (`/runs?view=reports`) filtered by status, meter and time, and the
digest's links to it: the section's link and each status x meter line open exactly the reports
the digest counted (followed with Flask's test client). The reports are those of the digest's
own tests (`_seed_window`). SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from html import unescape
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from service.config import Settings
from service.models import ErrorReport
from service.notify.content import collect_digest
from service.notify.render import render_digest
from service.notify.windows import Window
from tests.integration.notify_helpers import DAY, NOW
from tests.integration.test_notify_reports_in_digest import BASE, _seed_report, _seed_window

TOKEN = "reports-view-token-0123456789"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
ROW = re.compile(r'<tr data-testid="report-row"[^>]*>\s*<td>([^<]*)</td>(.*?)</tr>', re.S)
STATUS = re.compile(r'data-testid="report-status"[^>]*>([^<]*)<')
NEXT = re.compile(r'data-testid="next-page" href="([^"]+)"')
WINDOW = Window(DAY, DAY + timedelta(days=1))
# `_seed_window`'s reports left unmatched or partial in WINDOW (the digest counts them)
LEFT_IN_WINDOW = {"evt_u1", "evt_u2", "evt_u3", "evt_p1", "evt_p2"}


@pytest.fixture
def client(
    db_url: str,
    db_engine: Engine,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> Iterator[FlaskClient]:
    """A dashboard session (logged in through the form), over `_seed_window`'s reports."""
    settings = make_settings(
        database_url=db_url,
        mfx_admin_token=TOKEN,
        stripe_api_key="sk_test_x",
        stripe_webhook_secrets="whsec_x",
    )
    app_client = make_app(settings).test_client()
    _seed_window(db_engine)
    found = CSRF.search(app_client.get("/login").get_data(as_text=True))
    assert found is not None
    form = {"token": TOKEN, "csrf_token": found.group(1), "next": "/"}
    assert app_client.post("/login", data=form).status_code == 302
    yield app_client


def _page(client: FlaskClient, path: str, status: int = 200) -> str:
    response = client.get(path)
    body = response.get_data(as_text=True)
    assert response.status_code == status, body[:800]
    return body


def _rows(client: FlaskClient, path: str) -> list[str]:
    """The event ids of the reports the page lists, top to bottom."""
    return [unescape(event_id) for event_id, _ in ROW.findall(_page(client, path))]


def _all_pages(client: FlaskClient, path: str) -> list[str]:
    """The event ids of every page, following the "Older" links from `path`."""
    shown: list[str] = []
    while path:
        body = _page(client, path)
        shown += [unescape(event_id) for event_id, _ in ROW.findall(body)]
        found = NEXT.search(body)
        path = unescape(found.group(1)) if found else ""
    return shown


def _statuses(client: FlaskClient, path: str) -> dict[str, str]:
    body = _page(client, path)
    return {event_id: STATUS.findall(cells)[0] for event_id, cells in ROW.findall(body)}


def _ids_of(engine: Engine, *event_ids: str) -> list[str]:
    """These reports newest first, as the page lists them (by id, descending)."""
    with Session(engine) as session:
        found = session.exec(
            select(ErrorReport.event_id)
            .where(col(ErrorReport.event_id).in_(event_ids))
            .order_by(col(ErrorReport.id).desc())
        ).all()
    return list(found)


# --- filters -----------------------------------------------------------------------------


def test_status_filter_lists_only_reports_of_those_statuses(
    client: FlaskClient, db_engine: Engine
) -> None:
    """The digest's link opened every report, newest first: the operator could not find the
    ones it counted among the remediated ones."""
    unmatched = _ids_of(db_engine, "evt_u1", "evt_u2", "evt_u3", "evt_old")
    assert _rows(client, "/runs?view=reports&status=unmatched") == unmatched
    shown = _statuses(client, "/runs?view=reports&status=unmatched")
    assert set(shown.values()) == {"unmatched"}
    left = _ids_of(db_engine, *LEFT_IN_WINDOW, "evt_old", "evt_late")
    assert _rows(client, "/runs?view=reports&status=unmatched,partial") == left
    assert _rows(client, "/runs?view=reports&status=partial&status=unmatched") == left
    everything = _rows(client, "/runs?view=reports")
    assert len(everything) == 9 and everything == sorted(everything, key=everything.index)


def test_meter_filter_and_reports_without_a_meter(client: FlaskClient, db_engine: Engine) -> None:
    partial = _ids_of(db_engine, "evt_p1", "evt_p2", "evt_late")
    assert _rows(client, "/runs?view=reports&status=partial&meter=mtr_api") == partial
    assert _rows(client, "/runs?view=reports&meter=mtr_other") == []
    assert _rows(client, "/runs?view=reports&no_meter=yes") == ["evt_u3"]
    with_meter = _rows(client, "/runs?view=reports&no_meter=no&status=unmatched")
    assert with_meter == _ids_of(db_engine, "evt_u1", "evt_u2", "evt_old")


def test_since_until_select_as_the_digest_counts(client: FlaskClient, db_engine: Engine) -> None:
    """The quarantine filter's dates: a date alone as `until` is the whole day. A report is
    dated by when it was recorded, a partial one by when its task last found it short: evt_p2
    (recorded the day before) is the day's, evt_late (recorded at 23:59, found short after
    midnight) is not."""
    day = "/runs?view=reports&since=2026-11-29&until=2026-11-29"
    assert _rows(client, day + "&status=unmatched,partial") == _ids_of(db_engine, *LEFT_IN_WINDOW)
    recorded = _ids_of(db_engine, *LEFT_IN_WINDOW, "evt_r", "evt_c")
    assert _rows(client, day) == recorded
    next_day = "/runs?view=reports&since=2026-11-30T00:00:00Z&status=partial"
    assert _rows(client, next_day) == ["evt_late"]
    before = "/runs?view=reports&until=2026-11-28T23:59:59.999999Z"
    assert _rows(client, before) == ["evt_old"]
    shown = {event_id: cells for event_id, cells in ROW.findall(_page(client, day))}
    found_short = 'data-testid="found-short">found short <time datetime="2026-11-29T00:10:00'
    assert found_short in shown["evt_p2"]  # why a report of the day before is listed
    assert "found-short" not in shown["evt_u1"]


def test_pages_of_a_filtered_list_keep_its_filters(client: FlaskClient, db_engine: Engine) -> None:
    path = "/runs?view=reports&status=unmatched,partial&since=2026-11-29&until=2026-11-29&limit=2"
    first = _page(client, path)
    found = NEXT.search(first)
    assert found is not None
    query = parse_qs(urlsplit(unescape(found.group(1))).query)
    assert query["status"] == ["unmatched,partial"] and query["limit"] == ["2"]
    assert query["since"] == ["2026-11-29T00:00:00+00:00"], query
    assert _all_pages(client, path) == _ids_of(db_engine, *LEFT_IN_WINDOW)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (
            "status=fixed",
            "status must be one of recorded|unmatched|remediated|partial, not 'fixed'",
        ),
        (
            "status=unmatched,",
            "status must be one of recorded|unmatched|remediated|partial, not ''",
        ),
        ("since=yesterday", "since must be an ISO-8601 date or time, not 'yesterday'"),
        ("since=2026-11-30&until=2026-11-29", "since must not be after until"),
        ("meter=a&meter=b", "meter is given more than once, with different values"),
        ("no_meter=maybe", "no_meter must be one of yes|no, not 'maybe'"),
        ("meter=mtr_api&no_meter=yes", "meter names a meter; no_meter=yes the reports without"),
        ("meter=a%00b", "meter holds a NUL character"),
    ],
)
def test_a_bad_filter_is_a_400_with_its_reason(
    client: FlaskClient, query: str, reason: str
) -> None:
    body = unescape(_page(client, f"/runs?view=reports&{query}", 400))
    assert reason in body, body[-800:]
    assert 'data-testid="report-row"' not in body


# --- the digest's links ------------------------------------------------------------------


def _path(url: str) -> str:
    assert url.startswith(BASE), url
    return url.removeprefix(BASE)


def test_the_digest_links_open_exactly_the_reports_it_counted(
    client: FlaskClient, db_engine: Engine
) -> None:
    """The section's link: the window's reports left unmatched or partial; each line's: that
    status and meter's (a line without a meter, the reports without one)."""
    digest = collect_digest(db_engine, WINDOW, public_url=BASE, examples=False)
    assert digest.reports_total.reports == len(LEFT_IN_WINDOW)
    linked = _all_pages(client, _path(digest.links["reports"]))
    assert linked == _ids_of(db_engine, *LEFT_IN_WINDOW)
    for line in digest.reports:
        shown = _statuses(client, _path(line.url))
        assert len(shown) == line.reports and set(shown.values()) == {line.status}, line
        assert set(shown) <= LEFT_IN_WINDOW
    lines = {(line.status, line.meter): line for line in digest.reports}
    assert set(_rows(client, _path(lines["unmatched", None].url))) == {"evt_u3"}
    assert set(_rows(client, _path(lines["partial", "mtr_api"].url))) == {"evt_p1", "evt_p2"}
    counted = [set(_rows(client, _path(line.url))) for line in digest.reports]
    assert set().union(*counted) == LEFT_IN_WINDOW


def test_a_report_found_short_at_the_window_end_is_the_next_windows_on_the_page(
    client: FlaskClient, db_engine: Engine
) -> None:
    """`until` is the last microsecond before the window's end, as for quarantined rows: a
    report found short exactly at the end is counted, and listed, in the next window only."""
    end = WINDOW.end
    _seed_report(
        db_engine, "evt_edge", "partial", "mtr_edge", {"x": 1}, end - timedelta(hours=2), end
    )
    this = collect_digest(db_engine, WINDOW, public_url=BASE, examples=False)
    following = Window(end, end + timedelta(days=1))
    after = collect_digest(db_engine, following, public_url=BASE, examples=False)
    assert "evt_edge" not in _all_pages(client, _path(this.links["reports"]))
    assert "evt_edge" in _all_pages(client, _path(after.links["reports"]))
    assert {line.meter for line in this.reports} == {"mtr_api", None}
    [edge] = [line for line in after.reports if line.meter == "mtr_edge"]
    assert _rows(client, _path(edge.url)) == ["evt_edge"]


def test_the_messages_carry_the_links_followed(client: FlaskClient, db_engine: Engine) -> None:
    """The links the tests above follow are the ones the email (text and HTML) and Slack
    carry: the section's title and each status x meter line."""
    digest = collect_digest(db_engine, WINDOW, public_url=BASE, examples=False)
    message = render_digest(digest, NOW)
    slack = json.dumps(message.slack, ensure_ascii=False)
    for url in [digest.links["reports"], *(line.url for line in digest.reports)]:
        assert url in message.text and f'href="{url.replace("&", "&amp;")}"' in message.html
        assert f"<{url}|" in slack, url
    assert len({line.url for line in digest.reports}) == len(digest.reports) == 3


# --- the admin API ---------------------------------------------------------------------------


def test_the_admin_api_lists_error_reports_with_the_pages_filters(
    client: FlaskClient, db_engine: Engine
) -> None:
    """The reports left unmatched or partial were on the dashboard and in the digests only: an
    operator scripting against the admin API (`/api/runs`, `/api/quarantine`) had no way to
    list them. `GET /api/reports` takes the page's filters and paging."""
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def listed(query: str, status: int = 200) -> dict[str, object]:
        response = client.get(f"/api/reports?{query}", headers=headers)
        assert response.status_code == status, response.get_data(as_text=True)[:400]
        found: dict[str, object] = response.get_json()
        return found

    until = DAY + timedelta(days=1, microseconds=-1)
    window = urlencode(
        {"status": "unmatched,partial", "since": DAY.isoformat(), "until": until.isoformat()}
    )
    data = listed(window)["data"]
    assert isinstance(data, list)
    assert [item["event_id"] for item in data] == _ids_of(db_engine, *LEFT_IN_WINDOW)
    assert {item["status"] for item in data} == {"unmatched", "partial"}
    assert all("run_ids" in item and "error_count" in item for item in data)
    first = listed(f"{window}&limit=2")
    assert len(first["data"]) == 2 and first["next_cursor"]  # type: ignore[arg-type]
    rest = listed(f"{window}&limit=10&cursor={first['next_cursor']}")["data"]
    assert [i["event_id"] for i in first["data"] + rest] == [i["event_id"] for i in data]  # type: ignore[operator]
    assert listed("status=lost", 400)["error"].startswith("status must be")  # type: ignore[union-attr]
    unknown = listed("colour=red", 400)["error"]
    assert unknown.startswith("unknown parameter 'colour'; this list takes status, meter")  # type: ignore[union-attr]
