"""The JSON admin API through Flask's test client on SQLite and PostgreSQL: every endpoint's
content, statuses and the admin actions it records; the token; pagination; bad parameters."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from sqlmodel import Session, col, func, select

from service.config import Settings
from service.db import make_engine
from service.models import AdminAction, InboxEvent, QuarantinedRow
from tests.integration import web_seed as seed

TOKEN = "test-admin-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Api:
    client: FlaskClient
    engine: Engine

    def get(self, path: str, status: int = 200) -> Any:
        response = self.client.get(path, headers=BEARER)
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.is_json or path.endswith(".csv") or path.startswith("/api/quarantine.csv")
        return response.get_json() if response.is_json else response.get_data(as_text=True)

    def post(self, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = self.client.post(path, headers=BEARER, **kwargs)
        assert response.status_code == status, response.get_data(as_text=True)
        return response.get_json()

    def actions(self) -> list[AdminAction]:
        with Session(self.engine) as session:
            return list(session.exec(select(AdminAction).order_by(col(AdminAction.id))).all())


def stripe_settings(make_settings: Callable[..., Settings], **values: Any) -> Settings:
    """Settings that are not the embedded defaults (a Stripe key is set)."""
    return make_settings(stripe_api_key="sk_test_x", stripe_webhook_secrets="whsec_x", **values)


@pytest.fixture
def api(
    db_url: str, make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> Iterator[Api]:
    app = make_app(stripe_settings(make_settings, database_url=db_url, mfx_admin_token=TOKEN))
    engine = make_engine(db_url)
    yield Api(app.test_client(), engine)
    engine.dispose()


def test_without_a_token_dashboard_and_api_answer_404(
    make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]
) -> None:
    client = make_app(stripe_settings(make_settings)).test_client()
    for path in ("/api/alerts", "/api/health", "/"):
        response = client.get(path, headers=BEARER)
        assert response.status_code == 404
    assert client.get("/api/alerts").get_json() == {"error": "not found"}
    assert client.post("/api/alerts/1/acknowledge").status_code == 404
    assert client.get("/healthz").status_code == 200  # probes stay open


def test_wrong_or_missing_token_is_401_json(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = api.client.get("/api/alerts", headers=headers)
        assert response.status_code == 401
        assert response.get_json() == {"error": "missing or wrong bearer token"}
    response = api.client.post("/api/events/evt_1/replay", headers={"Authorization": "Bearer x"})
    assert response.status_code == 401


def test_unknown_paths_and_methods_under_api_are_json(api: Api) -> None:
    assert api.get("/api/nothing", 404)["error"]
    response = api.client.delete("/api/alerts", headers=BEARER)
    assert response.status_code == 405 and response.is_json


def test_alerts_list_filter_paginate_acknowledge_resolve(api: Api) -> None:
    first = seed.alert(api.engine, "a", severity="critical")
    second = seed.alert(api.engine, "b", severity="warning", links={"run": 7})
    seed.alert(api.engine, "c", status="resolved", severity="info")
    everything = api.get("/api/alerts")
    assert [a["key"] for a in everything["data"]] == ["c", "b", "a"]
    assert everything["next_cursor"] is None
    opened = api.get("/api/alerts?status=open")["data"]
    assert [a["id"] for a in opened] == [second, first]
    assert opened[0]["links"] == {"run": 7} and opened[0]["severity"] == "warning"
    assert [a["key"] for a in api.get("/api/alerts?severity=info")["data"]] == ["c"]

    page = api.get("/api/alerts?limit=2")
    assert len(page["data"]) == 2 and page["next_cursor"] == str(second)
    rest = api.get(f"/api/alerts?limit=2&cursor={page['next_cursor']}")
    assert [a["id"] for a in rest["data"]] == [first] and rest["next_cursor"] is None

    acked = api.post(f"/api/alerts/{first}/acknowledge")
    assert acked["status"] == "acknowledged" and acked["acknowledged_at"]
    [action] = acked["actions"]
    assert action["action"] == "acknowledge" and action["via"] == "api"
    assert action["source_address"] == "127.0.0.1" and action["created_at"]
    assert api.post(f"/api/alerts/{first}/acknowledge", 409)["error"]
    resolved = api.post(f"/api/alerts/{first}/resolve")
    assert resolved["status"] == "resolved" and resolved["resolved_at"]
    assert [a["action"] for a in resolved["actions"]] == ["acknowledge", "resolve"]
    listed = {a["id"]: a for a in api.get("/api/alerts?status=resolved")["data"]}
    assert [a["action"] for a in listed[first]["actions"]] == ["acknowledge", "resolve"]
    assert api.post("/api/alerts/999999/resolve", 404) == {"error": "no alert with id 999999"}
    assert [(a.action, a.target_type, a.target_id) for a in api.actions()] == [
        ("acknowledge", "alert", str(first)),
        ("resolve", "alert", str(first)),
    ]


BAD_ALERT_QUERIES = [
    ("status=closed", "status must be one of open|acknowledged|resolved"),
    ("severity=fatal", "severity must be one of info|warning|critical"),
    ("limit=0", "limit must be a positive whole number"),
    ("limit=abc", "limit must be a positive whole number"),
    ("limit=501", "limit must be at most 500"),
    ("cursor=-3", "cursor must be a positive whole number"),
]


def test_bad_alert_parameters_are_400_with_reason(api: Api) -> None:
    for query, reason in BAD_ALERT_QUERIES:
        assert api.get(f"/api/alerts?{query}", 400)["error"].startswith(reason), query


def test_runs_and_a_run_with_inputs_outputs_and_reimport_state(api: Api) -> None:
    key = "import_set:impset_1:file_123"
    run_id = seed.run(api.engine, key, generation=2, input_generation=0)
    older = seed.run(api.engine, "poller:impset_p", trigger="poller", source="usage/a.csv")
    seed.import_set(api.engine, "impset_1", key)
    corrected = "corrected/impset_1/a.r1.csv"
    waiting = "corrected/impset_1/b.r1.csv"
    seed.output(api.engine, run_id, "corrected", corrected)
    seed.output(api.engine, run_id, "corrected", waiting)
    seed.output(api.engine, run_id, "quarantine", "quarantine/impset_1/a.r1.csv", rows=3)
    seed.bucket_object(api.engine, corrected)

    listing = api.get("/api/runs")
    assert [r["id"] for r in listing["data"]] == [older, run_id]
    assert listing["data"][0]["input"] == {
        "type": "poller_import",
        "import_set_id": "impset_p",
        "object": "usage/a.csv",
    }
    assert [r["id"] for r in api.get("/api/runs?limit=1")["data"]] == [older]
    # the generation a run traced its input from; none kept before migration 0010
    assert [(r["generation"], r["input_generation"]) for r in listing["data"]] == [
        (1, None),
        (2, 0),
    ]

    run = api.get(f"/api/runs/{run_id}")
    assert (run["input_rows"], run["valid"], run["corrected"], run["quarantined"]) == (10, 2, 5, 3)
    assert run["by_code"]["no_meter"] == {"corrected": 0, "quarantined": 3}
    [source] = run["inputs"]
    assert source["type"] == "import_set" and source["file"] == "file_123"
    assert source["import_set"]["source_object"] == "usage/2026-11-30.csv"
    outputs = {o["key"]: o for o in run["outputs"]}
    assert outputs[corrected]["reimport"]["imported"] is True
    assert outputs[corrected]["reimport"]["imported_at"].startswith("2026-11-30T12:01")
    assert outputs[waiting]["reimport"] == {"imported": False}
    assert "reimport" not in outputs["quarantine/impset_1/a.r1.csv"]
    assert api.get("/api/runs/424242", 404) == {"error": "no run with id 424242"}
    assert api.get("/api/runs/abc", 404)["error"]


def _quarantine(api: Api) -> tuple[int, int, list[int]]:
    run_a = seed.run(api.engine, "import_set:impset_a:file_a")
    run_b = seed.run(api.engine, "import_set:impset_b:file_b")
    early = seed.NOW - timedelta(days=3)
    ids = seed.quarantined(
        api.engine,
        run_a,
        [
            {"identifier": "r1", "code": "no_meter", "meter": "api_calls", "customer": "cus_1"},
            {
                "identifier": "r2",
                "code": "timestamp_too_far_in_past",
                "meter": "tokens",
                "customer": "cus_2",
                "created_at": early,
            },
        ],
    )
    ids += seed.quarantined(
        api.engine,
        run_b,
        [{"identifier": "r3", "code": "no_meter", "meter": "tokens", "customer": "cus_1"}],
    )
    return run_a, run_b, ids


def test_quarantine_rows_in_full_with_every_filter(api: Api) -> None:
    run_a, run_b, (r1, r2, r3) = _quarantine(api)
    rows = api.get("/api/quarantine")["data"]
    assert [row["id"] for row in rows] == [r3, r2, r1]
    first = rows[2]
    assert first["code"] == "no_meter" and first["reason"] == "reason for r1"
    assert first["record"]["payload"] == {"stripe_customer_id": "cus_1", "value": "5"}
    assert first["record"]["event_name"] == "api_calls" and first["mfx_code"] == "no_meter"

    def ids(query: str) -> list[int]:
        return [row["id"] for row in api.get(f"/api/quarantine?{query}")["data"]]

    assert ids("code=no_meter") == [r3, r1]
    assert ids("meter=tokens") == [r3, r2]
    assert ids("customer=cus_1") == [r3, r1]
    assert ids(f"run={run_a}") == [r2, r1]
    assert ids("code=no_meter&customer=cus_1&meter=tokens") == [r3]
    assert ids("since=2026-11-29") == [r3, r1]
    assert ids("until=2026-11-28T00:00:00Z") == [r2]
    assert ids("since=2026-11-27T11:00:00%2B00:00&until=2026-11-27T13:00") == [r2]
    assert ids("limit=1&cursor=" + str(r3)) == [r2]
    assert ids("code=nothing") == []
    assert run_b


BAD_QUARANTINE_QUERIES = [
    ("since=yesterday", "since must be an ISO-8601 date or time"),
    ("until=2026-13-01", "until must be an ISO-8601 date or time"),
    ("run=x", "run must be a positive whole number"),
    ("since=2026-11-30&until=2026-11-01", "since must not be after until"),
    ("code=" + "x" * 300, "code is longer than 255 characters"),
]


def test_bad_quarantine_filters_are_400(api: Api) -> None:
    for query, reason in BAD_QUARANTINE_QUERIES:
        assert api.get(f"/api/quarantine?{query}", 400)["error"].startswith(reason)
        assert api.get(f"/api/quarantine.csv?{query}", 400)["error"].startswith(reason)
        assert api.post(f"/api/quarantine/rerun?{query}", 400)["error"].startswith(reason)


def test_quarantine_csv_has_the_filtered_rows_in_full(api: Api) -> None:
    _, _, (r1, _, r3) = _quarantine(api)
    response = api.client.get("/api/quarantine.csv?code=no_meter", headers=BEARER)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [int(row["id"]) for row in rows] == [r3, r1]
    assert rows[1]["identifier"] == "r1" and rows[1]["event_name"] == "api_calls"
    assert rows[1]["reason"] == "reason for r1" and rows[1]["customer"] == "cus_1"
    assert '"stripe_customer_id": "cus_1"' in rows[1]["payload"]
    run_id = seed.run(api.engine, "cli:formula")
    seed.quarantined(api.engine, run_id, [{"identifier": "=1+2", "code": "x", "customer": "@c"}])
    text = api.get(f"/api/quarantine.csv?run={run_id}")
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert (row["identifier"], row["customer"]) == ("'=1+2", "'@c")  # no spreadsheet formulas
    assert '"identifier": "=1+2"' in row["record"]  # the row itself, exactly


def test_rerun_queues_one_task_and_records_the_action(api: Api) -> None:
    _quarantine(api)
    queued = api.post("/api/quarantine/rerun?code=no_meter", 202)
    assert queued["queued"] is True and queued["rows"] == 2
    assert queued["filters"] == {"code": "no_meter"}
    with Session(api.engine) as session:
        task = session.exec(
            select(InboxEvent.event_id, InboxEvent.status).where(InboxEvent.style == "task")
        ).one()
    assert task == (queued["task"], "pending")
    assert queued["task"] == f"mfx_task_quarantine_rerun_{queued['action_id']}"
    [action] = api.actions()
    assert (action.action, action.target_type, action.via) == ("rerun", "quarantine", "api")
    with Session(api.engine) as session:  # the newest row then: the task takes none after it
        newest = session.exec(select(func.max(QuarantinedRow.id))).one()
    assert action.detail == {"filters": {"code": "no_meter"}, "rows": 2, "through": newest}
    assert action.source_address == "127.0.0.1"
    nothing = api.post("/api/quarantine/rerun", 200, json={"code": "unknown_code"})
    assert nothing == {"queued": False, "rows": 0, "filters": {"code": "unknown_code"}}


BAD_RERUN_BODIES = [
    (
        {"data": '{"code": "no_meter"', "content_type": "application/json"},
        "the body must be a JSON object of filters; it is not JSON",
    ),
    ({"json": ["no_meter"]}, "the body must be a JSON object of filters; it is a JSON list"),
    ({"json": {"code": ["no_meter"]}}, "code must be text or a whole number, not a JSON list"),
    ({"json": {"run": True}}, "run must be text or a whole number, not a JSON boolean"),
    ({"json": {"cod": "no_meter"}}, "unknown filter 'cod'; the filters are code, meter, customer"),
    ({"query_string": {"custmer": "cus_1"}}, "unknown filter 'custmer'"),
    ({"data": {"meter": "m", "runn": "3"}}, "unknown filter 'runn'"),
    # a JSON filter not declared JSON was neither read nor refused: every row re-run
    (
        {"data": b'{"code": "no_meter"}', "content_type": "text/plain"},
        "the body must be a JSON object of filters (Content-Type: application/json) or a "
        "form; it is text/plain",
    ),
    ({"data": b'{"code": "no_meter"}'}, "the body must be a JSON object of filters"),
]


@pytest.mark.parametrize(("request_", "reason"), BAD_RERUN_BODIES)
def test_a_rerun_whose_filter_cannot_be_read_in_full_is_400_and_queues_nothing(
    api: Api, request_: dict[str, Any], reason: str
) -> None:
    """A re-run takes every row its filter matches: a body it could not read, or a misspelt
    filter, was taken as no filter at all (every quarantined row re-run)."""
    _quarantine(api)
    assert api.post("/api/quarantine/rerun", 400, **request_)["error"].startswith(reason)
    assert api.actions() == []
    with Session(api.engine) as session:
        assert session.exec(select(InboxEvent).where(InboxEvent.style == "task")).all() == []
    queued = api.post("/api/quarantine/rerun", 202, json={"code": "no_meter"})
    assert (queued["rows"], queued["filters"]) == (2, {"code": "no_meter"})


def test_a_rerun_filter_given_in_the_query_and_the_body_is_refused_unless_the_same(
    api: Api,
) -> None:
    """The query string, a JSON body and a form each may give filters; one given in two of
    them with different values is refused (the body's was taken, unsaid; before that the
    query's), as one given twice in one place is."""
    _quarantine(api)
    differ = api.post("/api/quarantine/rerun?code=unknown_code", 400, json={"code": "no_meter"})
    assert differ["error"] == "code is given more than once, with different values"
    twice = api.post("/api/quarantine/rerun?code=no_meter&code=unknown_code", 400)
    assert twice["error"] == "code is given more than once, with different values"
    assert api.actions() == []
    queued = api.post("/api/quarantine/rerun?code=no_meter", 202, json={"code": "no_meter"})
    assert (queued["rows"], queued["filters"]) == (2, {"code": "no_meter"})


@pytest.mark.parametrize(
    "path",
    [
        "/api/runs/2147483648",
        "/api/runs/9223372036854775808",
        "/api/runs/99999999999999999999999",
        "/api/alerts/2147483648/acknowledge",
        "/api/alerts/9223372036854775808/acknowledge",
        "/api/alerts/99999999999999999999999/resolve",
    ],
)
def test_an_id_past_what_a_row_id_holds_is_404_not_500(api: Api, path: str) -> None:
    """Ids are INTEGER columns: a larger one was a 500 on SQLite past 64 bits, and on
    PostgreSQL past 32 bits a 503 "database unavailable" (the database was fine)."""
    what = "run" if "/runs/" in path else "alert"
    number = path.split("/")[3]
    send = api.get if what == "run" else api.post
    assert send(path, 404) == {"error": f"no {what} with id {number}"}
    largest = "2147483647"
    assert send(path.replace(number, largest), 404) == {"error": f"no {what} with id {largest}"}


@pytest.mark.parametrize(
    "query",
    [
        "/api/quarantine?run={}",
        "/api/quarantine.csv?run={}",
        "/api/quarantine?cursor={}",
        "/api/alerts?cursor={}",
        "/api/runs?cursor={}",
        "/api/events?cursor={}",
    ],
)
def test_a_run_or_cursor_past_what_a_row_id_holds_is_400(api: Api, query: str) -> None:
    name = "run" if "run=" in query else "cursor"
    reason = f"{name} must be at most 2147483647, not 2147483648"
    assert api.get(query.format(2147483648), 400) == {"error": reason}
    largest = api.get(query.format(2147483647))  # no row has it: nothing listed
    if isinstance(largest, str):
        assert largest.splitlines()[1:] == []
    elif name == "run":
        assert largest["data"] == []
    if name == "run":
        assert api.post("/api/quarantine/rerun?run=2147483648", 400) == {"error": reason}


@pytest.mark.parametrize("name", ["code", "meter", "customer"])
def test_a_filter_holding_a_nul_character_is_400(api: Api, name: str) -> None:
    """PostgreSQL's text holds no NUL: such a filter failed the query there, answered 503
    "database unavailable" (a stored row cannot hold one, so the filter matches nothing)."""
    _quarantine(api)
    reason = f"{name} holds a NUL character (U+0000); no stored value does"
    for path in ("/api/quarantine", "/api/quarantine.csv"):
        assert api.get(f"{path}?{name}=a%00b", 400) == {"error": reason}
    assert api.post("/api/quarantine/rerun", 400, json={name: "\x00"}) == {"error": reason}
    assert api.actions() == []


@pytest.mark.parametrize("ref", ["%00", "evt_1%00", "2147483648", "99999999999999999"])
def test_replaying_an_event_no_row_can_be_is_404(api: Api, ref: str) -> None:
    """An event id with a NUL, or a row id past what an id holds: 503 on PostgreSQL."""
    shown = ref.replace("%00", "\\x00")
    assert api.post(f"/api/events/{ref}/replay", 404) == {
        "error": f"no event '{shown}' in the inbox"
    }


def test_events_list_and_replay(api: Api) -> None:
    done = seed.event(api.engine, "evt_done")
    dead = seed.event(api.engine, "evt_dead", status="dead")
    listing = api.get("/api/events")
    assert [e["id"] for e in listing["data"]] == [dead, done]
    [found] = api.get("/api/events?status=dead")["data"]
    assert found["event_id"] == "evt_dead" and found["attempts"] == 8
    assert found["last_error"] == "StripeError: boom" and "body" not in found
    assert api.get("/api/events?status=lost", 400)["error"].startswith(
        "status must be one of pending|processing|done|ignored|dead"
    )
    replayed = api.post("/api/events/evt_dead/replay")
    assert replayed["status"] == "pending" and replayed["attempts"] == 0
    [action] = replayed["actions"]
    assert action["action"] == "replay" and action["detail"]["from"] == "dead"
    assert api.get("/api/events?status=dead")["data"] == []
    assert api.post(f"/api/events/{done}/replay")["event_id"] == "evt_done"  # by row id too
    assert api.post("/api/events/evt_missing/replay", 404) == {
        "error": "no event 'evt_missing' in the inbox"
    }


def test_health_shows_heartbeats_backlog_and_oldest_pending(api: Api) -> None:
    seed.heartbeat(api.engine, "host:1:w", "worker", age_seconds=12)
    waiting_since = datetime.now(UTC) - timedelta(minutes=5)
    seed.event(api.engine, "evt_waiting", status="pending", received_at=waiting_since)
    health = api.get("/api/health")
    assert 11 <= health["worker_heartbeat_age_seconds"] < 60
    assert health["heartbeats"]["worker"]["instance"] == "host:1:w"
    assert health["poller_heartbeat_age_seconds"] is None
    assert health["backlog_items"] == 1
    assert 299 <= health["oldest_pending_age_seconds"] < 400
    assert health["heartbeat_silence_seconds"] == 300


def test_a_stored_exact_number_is_shown_as_its_file_spelled_it(api: Api) -> None:
    """A quarantined JSON row's `12345678901234567.25` (kept exact in the database) is shown
    so by the API, its CSV download and the dashboard, not as the float nearest it."""
    run_id = seed.run(api.engine, "cli:exact")
    [row_id] = seed.quarantined(api.engine, run_id, [{"identifier": "x1", "code": "no_meter"}])
    exact = '{"identifier": "x1", "payload": {"value": 12345678901234567.25, "n": 1e400}}'
    with api.engine.begin() as connection:
        connection.execute(
            text("UPDATE quarantined_rows SET record = :record WHERE id = :id"),
            {"record": exact, "id": row_id},
        )
    [shown] = api.get(f"/api/quarantine?run={run_id}")["data"]
    assert shown["record"]["payload"]["value"] == 12345678901234567.25
    body = api.client.get(f"/api/quarantine?run={run_id}", headers=BEARER).get_data(as_text=True)
    assert '"value":12345678901234567.25' in body and "1.2345678901234568e+16" not in body
    assert '"n":1e400' in body and "Infinity" not in body
    [line] = list(csv.DictReader(io.StringIO(api.get(f"/api/quarantine.csv?run={run_id}"))))
    assert '"value": 12345678901234567.25' in line["payload"]
    assert '"value": 12345678901234567.25' in line["record"]
    login = api.client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login)
    assert csrf is not None
    form = {"token": TOKEN, "csrf_token": csrf.group(1), "next": "/quarantine"}
    assert api.client.post("/login", data=form).status_code == 302
    page = api.client.get(f"/quarantine?run={run_id}").get_data(as_text=True)
    assert "x1" in page and "12345678901234567.25" in page and "1.2345678901234568e+16" not in page
