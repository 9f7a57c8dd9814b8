# ruff: noqa: F811  (fixtures imported from the modules that define them)
"""The quarantine filter taking several runs (`run=3&run=7`, or `run=3,7`): the API, the
dashboard's links, a re-run of the rows of several runs, and the digest's quarantine link.
Flask's test client, the dashboard over real HTTP, the sandbox Stripe, SQLite and PostgreSQL.
Each test failed on the code before the fix (the filter took one run: a second `run=` was
ignored by the lists and refused by the re-run)."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from remediation.outcomes import OTHER_CODES
from service.config import Settings
from service.db import make_engine
from service.models import AdminAction, QuarantinedRow, RemediationRun
from service.notify.content import collect_digest
from service.notify.urls import MAX_LINK_RUNS
from service.notify.windows import Window
from service.runtime import Runtime
from service.worker.loop import InboxWorker
from service.worker.task_runner import TaskRunner
from tests.conftest import SandboxServer
from tests.integration import web_seed as seed
from tests.integration.test_web_api import Api, api  # noqa: F401 (fixture)
from tests.integration.test_web_pages import Dashboard, dashboard  # noqa: F401 (fixture)
from tests.integration.test_web_rerun import TOKEN, _remediate, _settings

HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
BASE = "https://mfx.example.com"
DAY = datetime(2026, 11, 29, tzinfo=UTC)


def _three_runs(engine: Engine) -> tuple[int, int, int]:
    """Runs a (two rows), b (one) and c (one), each row named after its run."""
    runs = tuple(seed.run(engine, f"run_{name}") for name in "abc")
    for run_id, name, count in zip(runs, "abc", (2, 1, 1), strict=True):
        rows = [
            {"identifier": f"{name}{n}", "code": "no_meter", "meter": "tokens", "customer": "c1"}
            for n in range(1, count + 1)
        ]
        seed.quarantined(engine, run_id, rows)
    return runs[0], runs[1], runs[2]


def _identifiers(rows: list[dict[str, object]]) -> set[object]:
    return {row["identifier"] for row in rows}


# --- the API ---------------------------------------------------------------------------------


def test_the_api_lists_exactly_the_rows_of_the_runs_given(api: Api) -> None:
    """README: `run=` picks the rows of a run; several runs, the rows of any of them.

    Before: `run=a&run=b` listed run a's rows only (the second `run` was dropped unsaid), and
    the re-run refused it ("run is given more than once, with different values")."""
    a, b, c = _three_runs(api.engine)
    for query in (f"run={a}&run={b}", f"run={a},{b}", f"run={b}%2C{a}&run={a}"):
        listed = api.get(f"/api/quarantine?{query}")["data"]
        assert _identifiers(listed) == {"a1", "a2", "b1"}, query
    assert _identifiers(api.get(f"/api/quarantine?run={c}")["data"]) == {"c1"}
    csv_text = api.get(f"/api/quarantine.csv?run={a}&run={c}")
    assert sorted(row["identifier"] for row in csv.DictReader(io.StringIO(csv_text))) == [
        "a1",
        "a2",
        "c1",
    ]

    queued = api.post(f"/api/quarantine/rerun?run={a}&run={b}", 202)
    assert (queued["rows"], queued["filters"]) == (3, {"run": f"{a},{b}"})
    queued = api.post("/api/quarantine/rerun", 202, json={"run": [c, str(b)]})
    assert (queued["rows"], queued["filters"]) == (2, {"run": f"{b},{c}"})
    assert [action.detail["filters"] for action in api.actions()] == [
        {"run": f"{a},{b}"},
        {"run": f"{b},{c}"},
    ]
    assert [action.target_id for action in api.actions()] == [f"run={a},{b}", f"run={b},{c}"]


def test_a_code_is_matched_in_any_case_as_codes_are_stored(api: Api) -> None:
    """Codes are stored in lower case (Stripe's are read so): `code=NO_METER`, or an unknown
    code as Stripe spelt it, listed nothing (200, an empty list) and a re-run of it took
    no row, no reason given."""
    _three_runs(api.engine)
    for code in ("no_meter", "NO_METER", " No_Meter "):
        listed = api.get(f"/api/quarantine?code={code}")["data"]
        assert _identifiers(listed) == {"a1", "a2", "b1", "c1"}, code
    queued = api.post("/api/quarantine/rerun?code=NO_METER", 202)
    assert (queued["rows"], queued["filters"]) == (4, {"code": "no_meter"})


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("run=abc", "run must be a positive whole number, not 'abc'"),
        ("run=1&run=abc", "run must be a positive whole number, not 'abc'"),
        ("run=1,,2", "run must be run ids separated by commas, not '1,,2'"),
        ("run=0", "run must be a positive whole number, not '0'"),
        ("run=" + ",".join(map(str, range(1, 102))), "run takes at most 100 runs, not 101"),
    ],
)
def test_a_bad_run_is_a_400_with_its_reason(api: Api, query: str, reason: str) -> None:
    assert api.get(f"/api/quarantine?{query}", 400) == {"error": reason}
    assert api.post(f"/api/quarantine/rerun?{query}", 400) == {"error": reason}
    assert api.actions() == []


def test_another_filter_given_twice_is_refused_by_the_lists_as_by_the_rerun(api: Api) -> None:
    """`code=a&code=b` listed the rows of code a alone, unsaid (a mapping reads the first
    value), while the re-run refused the same filter: the lists refuse it too, with the
    re-run's reason; the same value twice is that value."""
    _three_runs(api.engine)
    reason = {"error": "meter is given more than once, with different values"}
    assert api.get("/api/quarantine?meter=tokens&meter=other", 400) == reason
    assert api.get("/api/quarantine.csv?meter=tokens&meter=other", 400) == reason
    assert api.post("/api/quarantine/rerun?meter=tokens&meter=other", 400) == reason
    listed = api.get("/api/quarantine?meter=tokens&meter=tokens")["data"]
    assert _identifiers(listed) == {"a1", "a2", "b1", "c1"}


def test_the_dashboard_refuses_another_filter_given_twice(dashboard: Dashboard) -> None:
    _three_runs(dashboard.engine)
    dashboard.login()
    assert "code is given more than once, with different values" in dashboard.page(
        "/quarantine?code=no_meter&code=other", 400
    )
    same = dashboard.page("/quarantine?code=no_meter&code=no_meter")
    assert sorted(re.findall(r'<td class="key">([abc]\d)</td>', same)) == ["a1", "a2", "b1", "c1"]


def test_a_json_run_list_of_other_than_ids_is_refused(api: Api) -> None:
    refused = api.post("/api/quarantine/rerun", 400, json={"run": [1, [2]]})
    assert refused == {"error": "run must be text or a whole number, not a JSON list"}
    refused = api.post("/api/quarantine/rerun", 400, json={"run": [1, True]})
    assert refused == {"error": "run must be text or a whole number, not a JSON boolean"}
    refused = api.post("/api/quarantine/rerun", 400, json={"run": []})
    assert refused == {"error": "run must name at least one run, not an empty list"}
    assert api.actions() == []


# --- the dashboard ---------------------------------------------------------------------------


def _hrefs(html: str, testid: str) -> list[str]:
    pattern = (
        rf'<a href="([^"]+)"[^>]*data-testid="{testid}"|data-testid="{testid}"[^>]*href="([^"]+)"'
    )
    return [unescape(first or second) for first, second in re.findall(pattern, html)]


def test_the_dashboard_keeps_every_run_in_its_links_and_forms(dashboard: Dashboard) -> None:
    """Before: `/quarantine?run=a&run=b` showed run a's rows, its filter box, CSV link, next
    page and re-run button all named run a alone."""
    a, b, c = _three_runs(dashboard.engine)
    dashboard.login()
    html = dashboard.page(f"/quarantine?run={a}&run={b}&limit=2")
    assert re.findall(r'<td class="key">([abc]\d)</td>', html) == ["b1", "a2"]  # newest first
    assert re.search(rf'name="run" value="{a},{b}" data-testid="filter-run"', html)
    assert re.search(rf'type="hidden" name="run" value="{a},{b}"', html)
    [csv_link] = _hrefs(html, "csv-download")
    assert parse_qs(urlsplit(csv_link).query) == {"run": [f"{a},{b}"]}
    [next_link] = _hrefs(html, "next-page")
    assert parse_qs(urlsplit(next_link).query)["run"] == [f"{a},{b}"]
    following = dashboard.page(next_link)
    assert re.findall(r'<td class="key">([abc]\d)</td>', following) == ["a1"]

    form = {"csrf_token": dashboard.csrf("/quarantine"), "run": f"{a},{c}"}
    posted = dashboard.browser.post(
        dashboard.url + "/quarantine/rerun", data=form, allow_redirects=False
    )
    assert posted.status_code == 302
    assert parse_qs(urlsplit(posted.headers["Location"]).query) == {"run": [f"{a},{c}"]}
    with Session(dashboard.engine) as session:
        [action] = session.exec(select(AdminAction)).all()
    assert action.detail["filters"] == {"run": f"{a},{c}"} and action.detail["rows"] == 3
    assert "run must be a positive whole number, not &#39;abc&#39;" in dashboard.page(
        f"/quarantine?run={a}&run=abc", 400
    )


# --- a re-run of several runs ----------------------------------------------------------------


def test_a_rerun_of_several_runs_reruns_exactly_their_rows(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """A re-run takes the rows its filter matched: those of the runs named, whatever their
    generations (one run per generation, `quarantine_rerun`), and no other run's."""
    now = int(time.time())
    settings = _settings(make_settings, sandbox_server, db_url)
    engine = make_engine(db_url)
    runs = []
    for name, generation in (("a", 1), ("b", 2), ("c", 1)):
        content = HEADER + f"{name}1,{now},tokens,cus_1,1,no_meter\n"
        runs.append(_remediate(settings, engine, tmp_path, content, generation, f"file_{name}"))
    a, b, _ = (run.id for run in runs)
    sandbox_server.admin.create_meter("tokens")  # the operator makes the missing meter
    client = make_app(settings).test_client()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    queued = client.post(f"/api/quarantine/rerun?run={a}&run={b}", headers=bearer).get_json()
    assert (queued.get("rows"), queued.get("filters")) == (2, {"run": f"{a},{b}"}), queued
    report = InboxWorker(
        engine, settings, task_runner=TaskRunner(Runtime(settings, engine=engine))
    ).drain()
    assert report.done == [queued["task"]], report
    with Session(engine) as session:
        held = session.exec(select(QuarantinedRow).order_by(col(QuarantinedRow.id))).all()
        reruns = session.exec(
            select(RemediationRun).where(RemediationRun.trigger == "quarantine_rerun")
        ).all()
    taken = {row.identifier: row.rerun_id for row in held}
    assert sorted((r.generation, r.input_rows, r.valid) for r in reruns) == [(1, 1, 1), (2, 1, 1)]
    assert taken["a1"] in {r.id for r in reruns} and taken["b1"] in {r.id for r in reruns}
    assert taken["c1"] is None
    engine.dispose()


# --- the digest's quarantine link ------------------------------------------------------------


def _quarantining_runs(engine: Engine, count: int) -> list[int]:
    """`count` runs finished in the day, each quarantining one row (`r<n>`)."""
    ids = []
    for n in range(count):
        finished = DAY + timedelta(minutes=10 + n)
        run_id = seed.run(
            engine, f"day_{n}", quarantined=1, created_at=finished, finished_at=finished
        )
        row = {"identifier": f"r{n}", "code": "no_meter", "meter": "tokens", "customer": "c1"}
        seed.quarantined(engine, run_id, [{**row, "created_at": finished}])
        ids.append(run_id)
    return ids


@pytest.mark.parametrize("count", [2, MAX_LINK_RUNS])
def test_a_digest_link_names_every_quarantining_run_up_to_the_cap(
    db_engine: Engine, count: int
) -> None:
    ids = _quarantining_runs(db_engine, count)
    digest = collect_digest(
        db_engine, Window(DAY, DAY + timedelta(days=1)), public_url=BASE, examples=False
    )
    query = parse_qs(urlsplit(digest.links["quarantine"]).query)
    assert query == {"run": [",".join(map(str, sorted(ids)))]}


def test_a_digest_link_of_more_runs_than_the_cap_takes_the_window(db_engine: Engine) -> None:
    _quarantining_runs(db_engine, MAX_LINK_RUNS + 1)
    digest = collect_digest(
        db_engine, Window(DAY, DAY + timedelta(days=1)), public_url=BASE, examples=False
    )
    query = parse_qs(urlsplit(digest.links["quarantine"]).query)
    window = {"since": ["2026-11-29T00:00:00Z"], "until": ["2026-11-29T23:59:59.999999Z"]}
    assert query == window | {"rerun": ["no"]}  # the new input's rows, as the digest counts


def test_a_digests_other_codes_link_to_every_quarantined_row(db_engine: Engine) -> None:
    """The codes a run did not name (`OTHER_CODES`) link to the rows the digest counts, of
    every code, not to a code no row has; a named code to its own rows."""
    finished = DAY + timedelta(minutes=10)
    by_code = {
        "no_meter": {"corrected": 0, "quarantined": 1},
        OTHER_CODES: {"corrected": 0, "quarantined": 2},
    }
    run_id = seed.run(
        db_engine,
        "day_other",
        quarantined=3,
        by_code=by_code,
        created_at=finished,
        finished_at=finished,
    )
    row = {"meter": "tokens", "customer": "c1", "created_at": finished}
    codes = [("r1", "no_meter"), ("r2", "new_code_1"), ("r3", "new_code_2")]
    rows = [{**row, "identifier": identifier, "code": code} for identifier, code in codes]
    seed.quarantined(db_engine, run_id, rows)
    digest = collect_digest(
        db_engine, Window(DAY, DAY + timedelta(days=1)), public_url=BASE, examples=False
    )
    links = {line.code: parse_qs(urlsplit(line.url or "").query) for line in digest.codes}
    assert links == {
        "no_meter": {"code": ["no_meter"], "run": [str(run_id)]},
        OTHER_CODES: {"run": [str(run_id)]},
    }
