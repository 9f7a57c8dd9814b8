"""StateFile: a round trip keeps what Stripe would remember, written atomically."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sandbox.connector import DataErrors, data_errors, set_data_errors
from sandbox.objects import build_customer, build_meter
from sandbox.persistence import StateFile, StateFileError
from sandbox.state import Fault, PendingError, SandboxState


def _filled() -> SandboxState:
    state = SandboxState()
    meter = build_meter({"event_name": "api"})
    state.meters[meter["id"]] = meter
    state.customers["cus_1"] = build_customer({"id": "cus_1"})
    state.add_file(b"a,b\n1,2\n", "x.csv", "data_management_manual_upload")
    state.events["evt_1"] = {"id": "evt_1", "object": "v2.core.event", "type": "t"}
    state.identifiers["id-1"] = 1796032800.5
    state.sessions["tok"] = 1796033700.0
    state.pending_errors.append(PendingError("no_meter", "m", "id-2", "ghost", None))
    state.faults.append(Fault("*", "/", 500, 1))
    state.requests.append({"path": "/v1/x"})
    state.options.strict_customers = True
    set_data_errors(state, DataErrors.FILE)
    return state


def test_round_trip_keeps_everything_but_test_tools(tmp_path: Path) -> None:
    state = _filled()
    StateFile(tmp_path / "s.json").save(state)
    loaded = StateFile(tmp_path / "s.json").load()
    for name in ("meters", "customers", "events", "identifiers", "sessions", "pending_errors"):
        assert getattr(loaded, name) == getattr(state, name), name
    ((file_id, stored),) = loaded.files.items()
    assert stored == state.files[file_id]
    assert loaded.options.strict_customers and data_errors(loaded) == DataErrors.FILE
    assert loaded.faults == [] and loaded.requests == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.json.files"]


def test_missing_file_is_a_fresh_state(tmp_path: Path) -> None:
    assert StateFile(tmp_path / "none.json").load().meters == {}


def test_reset_forgets_file_contents_on_disk(tmp_path: Path) -> None:
    state, store = _filled(), StateFile(tmp_path / "s.json")
    store.save(state)
    assert len(list(store.contents_dir.iterdir())) == 1
    state.reset()
    store.save(state)
    assert list(store.contents_dir.iterdir()) == []
    assert StateFile(tmp_path / "s.json").load().meters == {}


@pytest.mark.parametrize("text", ["{not json", '{"version": 99}', "[]", '{"version": 1}'])
def test_unreadable_file_raises_one_clear_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "s.json").write_text(text)
    with pytest.raises(StateFileError, match=r"s\.json is unreadable"):
        StateFile(tmp_path / "s.json").load()


def test_missing_file_contents_are_reported(tmp_path: Path) -> None:
    store = StateFile(tmp_path / "s.json")
    store.save(_filled())
    for blob in store.contents_dir.iterdir():
        blob.unlink()
    with pytest.raises(StateFileError):
        StateFile(tmp_path / "s.json").load()


def test_saves_race_with_changes_safely(tmp_path: Path) -> None:
    state, store = SandboxState(), StateFile(tmp_path / "s.json")
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(100):
                with state.lock:
                    state.identifiers[f"{worker}-{i}"] = float(i)
                    state.meter_events.append({"identifier": f"{worker}-{i}"})
                store.save(state)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(StateFile(tmp_path / "s.json").load().meter_events) == 400
