"""The state file's journal: a meter event batch costs the bytes of the batch, not of the state
(before, every POST rewrote the whole state file: importing 30,000 events took 28 s, 160 ms a
batch of 100 at 30,000 stored); a torn last line is dropped; a state file written before the
journal (format 1) still loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from sandbox.app import create_sandbox_app
from sandbox.defaults import SANDBOX_API_KEY
from sandbox.persistence import FORMAT_VERSION, StateFile, StateFileError, keep_state_in
from sandbox.runtime import Sandbox
from sandbox.state import PendingError, SandboxState

DATA = Path(__file__).parents[2] / "data" / "sandbox" / "state-v1"
SESSION = "/_host/api/v2/billing/meter_event_session"
STREAM = "/_host/meter_events/v2/billing/meter_event_stream"
PAYLOAD = {"stripe_customer_id": "cus_old", "value": "1"}  # the format 1 file's customer


def _kept_sandbox(path: Path, stored: int = 0) -> tuple[Flask, FlaskClient, str]:
    """An in-process sandbox keeping its state in `path`, with `stored` meter events accepted
    before its first save, a meter and a session token."""
    app = create_sandbox_app()
    keep_state_in(app, path)
    _accepted(_state(app), "stored", stored)
    client = app.test_client()
    assert client.post("/_sandbox/meters", json={"event_name": "api_requests"}).status_code == 200
    auth = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}
    token = client.post(SESSION, headers=auth).get_json()["authentication_token"]
    return app, client, str(token)


def _post_batch(client: FlaskClient, token: str, prefix: str, count: int = 100) -> None:
    events = [
        {"event_name": "api_requests", "identifier": f"{prefix}-{i:05d}", "payload": PAYLOAD}
        for i in range(count)
    ]
    answer = client.post(
        STREAM, json={"events": events}, headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)


def _journal_size(path: Path) -> int:
    journal = path.with_name(path.name + ".journal")
    return journal.stat().st_size if journal.exists() else 0


def _state(app: Flask) -> SandboxState:
    sandbox: Sandbox = app.extensions["sandbox"]
    return sandbox.state


def _accepted(state: SandboxState, prefix: str, count: int) -> None:
    """`count` meter events as the intake keeps them (a stored history, quickly)."""
    with state.lock:
        for i in range(count):
            identifier = f"{prefix}-{i:05d}"
            state.identifiers[identifier] = 1796600000.0 + i
            state.meter_events.append(
                {
                    "event_name": "api_requests",
                    "identifier": identifier,
                    "payload": PAYLOAD,
                    "timestamp": 1796600000,
                    "received_at": 1796600000.0 + i,
                    "source": "v2.meter_event_stream",
                }
            )


def test_a_batch_writes_about_one_batch_whatever_is_stored(tmp_path: Path) -> None:
    _, fresh_client, fresh_token = _kept_sandbox(tmp_path / "fresh.json")
    before = _journal_size(tmp_path / "fresh.json")
    _post_batch(fresh_client, fresh_token, "b")
    fresh_cost = _journal_size(tmp_path / "fresh.json") - before

    path = tmp_path / "full.json"
    _, client, token = _kept_sandbox(path, stored=20_000)  # its first save writes them whole
    snapshot = path.stat()
    assert snapshot.st_size > 20_000 * 150
    before = _journal_size(path)
    _post_batch(client, token, "b")
    cost = _journal_size(path) - before

    assert 100 * 150 < cost < 100 * 400, cost  # one line: the batch and its identifiers
    assert abs(cost - fresh_cost) <= fresh_cost // 10, (cost, fresh_cost)
    after = path.stat()  # the state file is not written again for a meter event batch
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        snapshot.st_ino,
        snapshot.st_mtime_ns,
        snapshot.st_size,
    )
    loaded = StateFile(path).load()
    assert len(loaded.meter_events) == 20_100
    assert loaded.meter_events[-1]["identifier"] == "b-00099"
    assert "b-00000" in loaded.identifiers and "stored-19999" in loaded.identifiers


def test_a_torn_last_line_is_dropped_and_the_rest_loaded(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    _, client, token = _kept_sandbox(path)
    _post_batch(client, token, "one", 3)
    _post_batch(client, token, "two", 3)
    journal = path.with_name("s.json.journal")
    lines = journal.read_bytes().splitlines(keepends=True)
    with open(journal, "ab") as out:  # a crash in the middle of the next line's write
        out.write(lines[-1][: len(lines[-1]) // 2])

    loaded = StateFile(path).load()
    assert [e["identifier"] for e in loaded.meter_events] == [
        "one-00000", "one-00001", "one-00002", "two-00000", "two-00001", "two-00002"
    ]  # fmt: skip
    again = create_sandbox_app()
    keep_state_in(again, path)  # folds the journal in, torn line gone
    assert _journal_size(path) == 0
    _post_batch(again.test_client(), token, "three", 2)
    assert len(StateFile(path).load().meter_events) == 8


def test_an_unreadable_line_before_the_last_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    _, client, token = _kept_sandbox(path)
    _post_batch(client, token, "one", 3)
    journal = path.with_name("s.json.journal")
    journal.write_bytes(b'{"seq": 9, "append": {"meter_e\n' + journal.read_bytes())
    with pytest.raises(StateFileError, match=r"s\.json\.journal line 1 is unreadable"):
        StateFile(path).load()


def test_lines_the_state_file_covers_are_not_applied_twice(tmp_path: Path) -> None:
    """A crash after the compacted state file's rename, before the journal was emptied."""
    path = tmp_path / "s.json"
    _, client, token = _kept_sandbox(path)
    _post_batch(client, token, "one", 3)
    journal = path.with_name("s.json.journal")
    lines = journal.read_bytes()
    keep_state_in(create_sandbox_app(), path)  # compacts
    journal.write_bytes(lines)
    loaded = StateFile(path).load()
    assert [e["identifier"] for e in loaded.meter_events] == ["one-00000", "one-00001", "one-00002"]


def test_changes_in_place_and_replaced_stores_are_kept(tmp_path: Path) -> None:
    """An identifier accepted again after Stripe's 24 h keeps its new time; a drained or
    replaced store is written whole."""
    state, store = SandboxState(), StateFile(tmp_path / "s.json")
    state.identifiers["again"] = 1.0
    state.pending_errors.append(PendingError("no_meter", "m", "g-1", "ghost", None))
    store.save(state)
    state.identifiers["again"] = 90_000.0
    state.events["evt_1"] = {"id": "evt_1"}
    state.pending_errors = [PendingError("no_meter", "m", "g-2", "ghost", None)]
    store.save(state)
    state.sessions = {"tok": 5.0}  # a plain dict put in the TrackedDict's place
    store.save(state)
    state.sessions["tok2"] = 6.0
    store.save(state)
    loaded = StateFile(tmp_path / "s.json").load()
    assert loaded.identifiers == {"again": 90_000.0}
    assert loaded.events == {"evt_1": {"id": "evt_1"}}
    assert [p.identifier for p in loaded.pending_errors] == ["g-2"]
    assert loaded.sessions == {"tok": 5.0, "tok2": 6.0}


def test_a_state_file_of_format_1_loads_and_is_kept(tmp_path: Path) -> None:
    """A file the previous code wrote (the whole state after every change)."""
    shutil.copytree(DATA, tmp_path / "old")
    path = tmp_path / "old" / "sandbox-state.json"
    app = create_sandbox_app()
    keep_state_in(app, path)
    state = _state(app)
    assert [e["identifier"] for e in state.meter_events] == ["old-0", "old-1", "old-2"]
    assert state.identifiers == {
        "old-0": 1796644800.0,
        "old-1": 1796644801.0,
        "old-2": 1796644802.0,
    }
    assert [d["identifier"] for d in state.duplicates] == ["old-0"]
    assert [p.identifier for p in state.pending_errors] == ["ghost-1"]
    assert list(state.events) == ["evt_test_old1"] and list(state.customers) == ["cus_old"]
    assert state.sessions == {"mes_tok_old": 1796645700.0}
    assert state.connector_seen == {"usage/old.csv": "etag-1"}
    assert [d["status"] for d in state.deliveries] == [200]
    ((stored),) = state.files.values()
    assert stored.content.startswith(b"identifier,timestamp,event_name\n")
    assert _saved_version(path) == FORMAT_VERSION  # rewritten in the new format at start

    client = app.test_client()
    auth = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}
    token = client.post(SESSION, headers=auth).get_json()["authentication_token"]
    _post_batch(client, str(token), "new", 2)
    loaded = StateFile(path).load()
    assert [e["identifier"] for e in loaded.meter_events][-3:] == [
        "old-2",
        "new-00000",
        "new-00001",
    ]
    assert set(loaded.identifiers) == {"old-0", "old-1", "old-2", "new-00000", "new-00001"}


def _saved_version(path: Path) -> Any:
    return json.loads(path.read_bytes())["version"]
