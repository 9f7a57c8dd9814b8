"""A run's corrections, listed: `/api/runs/<id>/corrections` and the page `/runs/<id>/corrections`.

Every correction was audited (`correction_audit`), but no page and no API call listed a run's:
the run page counted "Corrected" and linked nowhere, and the rows Stripe took as they came
(the import set's successes) were in the API alone. Real runs: a failed-records file and a
file Stripe failed whole, through signed events to the running app, the sandbox's Files API
and meters, the worker and a `file://` bucket, on both databases.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from sandbox.events import build_import_set_event
from service.config import Settings
from service.db import make_engine
from service.models import CorrectionAudit, RemediationRun
from service.web import corrections
from service.worker.loop import InboxWorker
from tests.conftest import SandboxServer
from tests.integration.test_web_pages import CSRF
from tests.integration.test_web_rerun import TOKEN, _settings
from tests.servers import serve_wsgi

HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
TIMESTAMPS = 60  # rows t000..t059, each a millisecond timestamp
RULES = '[customers]\n"<script>alert(1)</script>" = "cus_x"\n"=cmd()" = "cus_y"\n'
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def failed_records(now: int) -> str:
    """A failed-records file: timestamps in milliseconds, customers of a usage file's own
    (one a script tag, one a spreadsheet formula) mapped by the rules, a value with a
    thousands comma, an event name in the wrong case, and two rows without an identifier."""
    rows = [f"t{n:03d},{now * 1000},api_requests,cus_1,{n},timestamp_in_future" for n in range(60)]
    rows += [
        f"m1,{now},api_requests,<script>alert(1)</script>,5,meter_event_customer_not_found",
        f"m2,{now},api_requests,=cmd(),6,meter_event_customer_not_found",
        f'v1,{now},api_requests,cus_1,"1,234",meter_event_invalid_value',
        f"n1,{now},API-Requests,cus_1,8,no_meter",
        f",{now * 1000},api_requests,cus_1,9,timestamp_in_future",
        f",{now * 1000},api_requests,cus_1,10,timestamp_in_future",
    ]
    return HEADER + "\n".join(rows) + "\n"


@dataclass
class Site:
    url: str
    engine: Engine
    run: RemediationRun  # the failed-records run
    whole: RemediationRun  # the run of the file Stripe failed whole
    now: int

    def api(self, path: str) -> requests.Response:
        return requests.get(f"{self.url}/api{path}", headers=BEARER, timeout=10)

    def listing(self, query: str = "", run_id: int | None = None) -> dict[str, Any]:
        response = self.api(f"/runs/{run_id or self.run.id}/corrections{query}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def site(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> Iterator[Site]:
    settings = service_settings(sandbox_server, db_url, tmp_path, make_settings)
    engine = make_engine(db_url)
    now = int(time.time()) - 60
    with serve_wsgi(make_app(settings)) as running:
        run, whole = remediate(sandbox_server, running.url, engine, settings, now)
        yield Site(running.url, engine, run, whole, now)
    engine.dispose()


def service_settings(
    sandbox: SandboxServer,
    database_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
) -> Settings:
    """The service against the sandbox, with the rules mapping the file's own customers."""
    sandbox.admin.create_meter("api_requests")
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES + '[policy]\ndefault_event_name = "api_requests"\n')
    return _settings(make_settings, sandbox, database_url, mfx_rules=str(rules))


def remediate(
    sandbox: SandboxServer, url: str, engine: Engine, settings: Settings, now: int
) -> tuple[RemediationRun, RemediationRun]:
    """The runs of a failed-records file and of a file Stripe failed whole, made by the
    worker from the signed events sent to the app at `url`."""
    _succeeded_with_errors(sandbox, url, now)
    _failed_whole(sandbox, url, now)
    InboxWorker(engine, settings).drain()
    with Session(engine) as session:
        runs = {run.trigger: run for run in session.exec(select(RemediationRun)).all()}
    return runs["import_set.succeeded"], runs["import_set.failed"]


def _succeeded_with_errors(sandbox: SandboxServer, url: str, now: int) -> None:
    """Stripe took 500 rows of the file as they came and failed the rest (its failed-records
    file), the signed event sent to the app at `url`."""
    errors = sandbox.admin.upload_file(failed_records(now), "failed_records.csv", "data_management")
    body = {
        "id": "impset_listed",
        "object": "data_management.import_set",
        "status": "succeeded_with_errors",
        "result": {
            "errors": {"file": errors["id"], "row_count": TIMESTAMPS + 6},
            "successes": {"row_count": 500},
        },
    }
    event = build_import_set_event("data_management.import_set.succeeded", body)
    stored = sandbox.admin.add_event(event)
    assert sandbox.admin.deliver(stored["id"], f"{url}/webhooks")["status"] == 200


def _failed_whole(sandbox: SandboxServer, url: str, now: int) -> None:
    """A file without event names Stripe failed whole: each row's event name filled (one
    correction each) and w2's timestamp too (a second correction of the same row)."""
    content = "identifier,timestamp,payload_stripe_customer_id,payload_value\n"
    content += f"w1,{now},cus_1,5\nw2,{now * 1000},cus_1,7\nw3,{now * 1000},cus_1,8\n"
    copy = sandbox.admin.upload_file(content, "daily.csv")
    body = {"id": "impset_whole", "status": "failed", "file": copy["id"]}
    stored = sandbox.admin.add_event(
        build_import_set_event("data_management.import_set.failed", body)
    )
    assert sandbox.admin.deliver(stored["id"], f"{url}/webhooks")["status"] == 200


def _audit(engine: Engine, run_id: int) -> list[CorrectionAudit]:
    with Session(engine) as session:
        query = select(CorrectionAudit).where(CorrectionAudit.run_id == run_id)
        return list(session.exec(query.order_by(col(CorrectionAudit.id))).all())


def _item(line: CorrectionAudit) -> dict[str, Any]:
    return {
        "id": line.id,
        "row": line.row_number,
        "identifier": line.identifier,
        "new_identifier": line.new_identifier,
        "code": line.code,
        "rule": line.rule,
        "field": line.field,
        "before": line.before,
        "after": line.after,
    }


def _in_list_order(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """By identifier (byte order), then id; rows without an identifier last."""
    named = sorted((i for i in items if i["identifier"] is not None), key=_identifier_then_id)
    return named + sorted((i for i in items if i["identifier"] is None), key=lambda i: i["id"])


def _identifier_then_id(item: dict[str, Any]) -> tuple[bytes, int]:
    return item["identifier"].encode(), item["id"]


def _walk(site: Site, query: str, run_id: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """Every item of the list, page after page (`query` holds `limit` and filters); the
    number of pages read."""
    items: list[dict[str, Any]] = []
    cursor, pages = "", 0
    while True:
        page = site.listing(f"?{query}{cursor}", run_id)
        items += page["data"]
        pages += 1
        if page["next_cursor"] is None:
            return items, pages
        cursor = f"&cursor={page['next_cursor']}"
        assert pages < 200


def test_a_runs_corrections_are_listed_as_audited(site: Site) -> None:
    """Each change of the run, once, with its row, identifiers, code, rule, field and values
    exactly as the file held them."""
    now = site.now
    listed = site.listing("?limit=500")
    assert listed["next_cursor"] is None
    data = listed["data"]
    assert len(data) == TIMESTAMPS + 6 == site.run.corrected
    assert data == _in_list_order([_item(line) for line in _audit(site.engine, site.run.id)])
    lines = {item["identifier"]: {k: v for k, v in item.items() if k != "id"} for item in data}
    assert lines["m1"] == {
        "row": TIMESTAMPS + 1,
        "identifier": "m1",
        "new_identifier": "m1-mfx1",
        "code": "meter_event_customer_not_found",
        "rule": "map_customer",
        "field": "payload.stripe_customer_id",
        "before": "<script>alert(1)</script>",
        "after": "cus_x",
    }
    assert (lines["m2"]["before"], lines["m2"]["after"]) == ("=cmd()", "cus_y")
    assert (lines["v1"]["rule"], lines["v1"]["before"], lines["v1"]["after"]) == (
        "normalize_value",
        "1,234",
        "1234",
    )
    assert lines["t007"] == {
        "row": 8,
        "identifier": "t007",
        "new_identifier": "t007-mfx1",
        "code": "timestamp_in_future",
        "rule": "timestamp_ms_to_s",
        "field": "timestamp",
        "before": str(now * 1000),
        "after": str(now),
    }
    # in identifier order, the rows without one last, in file order
    named = [item["identifier"] for item in data[:-2]]
    assert named == ["m1", "m2", "n1", *(f"t{n:03d}" for n in range(TIMESTAMPS)), "v1"]
    unnamed = data[-2:]
    assert [(i["identifier"], i["row"]) for i in unnamed] == [(None, 65), (None, 66)]
    assert all(i["new_identifier"] and i["new_identifier"].endswith("-mfx1") for i in unnamed)


def test_pages_hold_every_correction_once(site: Site) -> None:
    whole = site.listing("?limit=500")["data"]
    for limit in (1, 7, 50):
        items, pages = _walk(site, f"limit={limit}")
        assert items == whole
        assert pages == -(-len(whole) // limit)  # the last page says it is the last
    # a run whose rows hold several corrections each (the same identifier on two lines)
    audit = _audit(site.engine, site.whole.id)
    assert [line.identifier for line in audit].count("w2") == 2
    items, _ = _walk(site, "limit=1", site.whole.id)
    assert items == _in_list_order([_item(line) for line in audit])
    assert [(i["identifier"], i["rule"]) for i in items] == [
        ("w1", "default_event_name"),
        ("w2", "default_event_name"),
        ("w2", "timestamp_ms_to_s"),
        ("w3", "default_event_name"),
        ("w3", "timestamp_ms_to_s"),
    ]


@pytest.mark.parametrize(
    ("query", "wanted"),
    [
        ("code=timestamp_in_future", lambda i: i["code"] == "timestamp_in_future"),
        ("code=NO_METER", lambda i: i["code"] == "no_meter"),  # codes are stored lower case
        ("rule=map_customer", lambda i: i["rule"] == "map_customer"),
        ("field=payload.value", lambda i: i["field"] == "payload.value"),
        ("identifier=t042", lambda i: i["identifier"] == "t042"),
        (
            "code=meter_event_customer_not_found&field=payload.stripe_customer_id&rule=map_customer",
            lambda i: i["identifier"] in ("m1", "m2"),
        ),
        ("code=timestamp_in_future&identifier=m1", lambda i: False),
        ("rule=no_such_rule", lambda i: False),
    ],
)
def test_filters(site: Site, query: str, wanted: Callable[[dict[str, Any]], bool]) -> None:
    whole = site.listing("?limit=500")["data"]
    expected = [item for item in whole if wanted(item)]
    items, _ = _walk(site, f"limit=3&{query}")
    assert items == expected
    assert site.listing(f"?limit=500&{query}")["data"] == expected


def test_a_filtered_page_reads_a_bounded_part_of_the_run(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter no index serves (code, rule, field) reads the run's rows a bounded number at
    a time: a page may hold fewer rows than its limit and still have a next one, and the
    pages together hold each matching row once."""
    whole = site.listing("?limit=500")["data"]
    monkeypatch.setattr(corrections, "SCAN_ROWS", 5)
    first = site.listing("?rule=map_customer")
    assert first["data"] == [i for i in whole if i["rule"] == "map_customer"]  # m1, m2
    assert first["next_cursor"] == str(whole[4]["id"])  # 5 of 66 rows read: more may match
    items, _ = _walk(site, "limit=2&code=timestamp_in_future")
    assert items == [i for i in whole if i["code"] == "timestamp_in_future"]
    none, pages = _walk(site, "rule=no_such_rule")
    named = [i for i in whole if i["identifier"] is not None]
    # 5 rows read a page, the last one reading the rest and the 2 rows without identifier
    assert none == [] and pages == len(named) // 5 + 1


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("?cod=no_meter", "unknown parameter 'cod'"),
        ("?limit=0", "limit must be a positive whole number, not '0'"),
        ("?limit=501", "limit must be at most 500"),
        ("?cursor=abc", "cursor must be a positive whole number, not 'abc'"),
        ("?cursor=2147483648", "cursor must be at most 2147483647"),
        ("?code=a&code=b", "code is given more than once, with different values"),
        ("?identifier=a%00b", "identifier holds a NUL character"),
        ("?code=" + "x" * 256, "code is longer than 255 characters"),
        ("?identifier=" + "x" * 513, "identifier is longer than 512 characters"),
    ],
)
def test_a_bad_parameter_is_a_400_with_the_reason(site: Site, query: str, reason: str) -> None:
    response = site.api(f"/runs/{site.run.id}/corrections{query}")
    assert response.status_code == 400
    assert reason in response.json()["error"]


def test_a_cursor_of_no_correction_of_the_run_is_a_400(site: Site) -> None:
    other = _audit(site.engine, site.whole.id)[0].id
    for cursor in (other, 999_999):
        response = site.api(f"/runs/{site.run.id}/corrections?cursor={cursor}")
        assert response.status_code == 400
        assert response.json() == {
            "error": f"cursor {cursor} is no correction of run {site.run.id}"
        }


@pytest.mark.parametrize("run", ["999999", "2147483648", "٣"])
def test_an_unknown_run_is_a_404(site: Site, run: str) -> None:
    response = site.api(f"/runs/{run}/corrections")
    assert response.status_code == 404
    assert "error" in response.json()
    if run == "999999":
        assert response.json() == {"error": "no run with id 999999"}


def test_the_page_lists_them_inert_and_the_run_page_links_to_it(site: Site) -> None:
    browser = _logged_in(site.url)
    run_page = browser.get(f"{site.url}/runs/{site.run.id}", timeout=10).text
    [sent] = re.findall(r'data-testid="count-successes">([^<]*)<', run_page)
    assert sent == "500"  # the rows Stripe took as they came
    link = f'href="/runs/{site.run.id}/corrections" data-testid="count-corrected">66<'
    assert link in run_page
    by_code = re.findall(r'href="([^"]*)" data-testid="by-code-corrections-link">(\d+)<', run_page)
    assert sorted((html.unescape(href), int(n)) for href, n in by_code) == sorted(
        [
            (f"/runs/{site.run.id}/corrections?code=timestamp_in_future", TIMESTAMPS + 2),
            (f"/runs/{site.run.id}/corrections?code=meter_event_customer_not_found", 2),
            (f"/runs/{site.run.id}/corrections?code=meter_event_invalid_value", 1),
            (f"/runs/{site.run.id}/corrections?code=no_meter", 1),
        ]
    )
    page = browser.get(
        f"{site.url}/runs/{site.run.id}/corrections?code=meter_event_customer_not_found", timeout=10
    )
    assert page.status_code == 200
    assert "<script>alert" not in page.text  # shown as text, never run
    befores = [html.unescape(b) for b in re.findall(r'data-testid="c-before">([^<]*)<', page.text)]
    assert befores == ["<script>alert(1)</script>", "=cmd()"]
    assert 'value="meter_event_customer_not_found" data-testid="filter-code"' in page.text
    # pages: the next one keeps the filter
    first = browser.get(f"{site.url}/runs/{site.run.id}/corrections?limit=50", timeout=10).text
    assert first.count('data-testid="correction-row"') == 50
    [href] = re.findall(r'data-testid="next-page" href="([^"]+)"', first)
    rest = browser.get(site.url + html.unescape(href), timeout=10).text
    assert rest.count('data-testid="correction-row"') == 16
    assert 'data-testid="next-page"' not in rest
    # the page's refusals are the API's, as a page
    bad = browser.get(f"{site.url}/runs/{site.run.id}/corrections?cod=x", timeout=10)
    assert bad.status_code == 400 and "unknown parameter" in html.unescape(bad.text)
    missing = browser.get(f"{site.url}/runs/999999/corrections", timeout=10)
    assert missing.status_code == 404 and "no run with id 999999" in missing.text


def _logged_in(url: str) -> requests.Session:
    browser = requests.Session()
    csrf = CSRF.search(browser.get(f"{url}/login", timeout=10).text)
    assert csrf is not None
    form = {"token": TOKEN, "csrf_token": csrf.group(1), "next": "/"}
    assert browser.post(f"{url}/login", data=form, timeout=10).status_code == 200
    return browser


def test_a_filtered_page_among_rows_without_an_identifier(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filtered page whose bounded read ends on a row without an identifier bounds it by id:
    bounded by its identifier (None) the page answered a 500 (a file without identifiers,
    every "By code" link of its run page)."""
    whole = site.listing("?limit=500")["data"]
    monkeypatch.setattr(corrections, "SCAN_ROWS", 1)
    items, _ = _walk(site, "limit=3&code=timestamp_in_future")
    assert items == [i for i in whole if i["code"] == "timestamp_in_future"]
    assert [i["identifier"] for i in items[-2:]] == [None, None]
