"""The database HandlerContext: idempotent per event, ordered per import set (both engines)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from handlers import REGISTRY
from handlers.records import OutcomeStatus
from service.db import make_engine, session_scope
from service.models import ImportSet
from service.worker.handler_context import DatabaseHandlerContext

EVENTS = Path(__file__).resolve().parents[2] / "data" / "events"


def _event(name: str, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    event.update(overrides)
    return event


def _succeeded(event_id: str, created: int, errors_file: str | None) -> dict[str, Any]:
    event = _event("snapshot_import_set_succeeded", id=event_id, created=created)
    event["data"]["object"]["result"]["errors"] = {"file": errors_file, "row_count": 1}
    return event


def test_import_set_follows_the_newest_event(db_url: str) -> None:
    engine = make_engine(db_url)

    def handle(event: dict[str, Any]) -> OutcomeStatus:
        with session_scope(engine) as session:
            return REGISTRY[event["type"]](event, DatabaseHandlerContext(session)).status

    def row() -> ImportSet:
        with Session(engine) as session:
            return session.exec(select(ImportSet)).one()

    assert handle(_succeeded("evt_a", 100, "file_1")) is OutcomeStatus.RECORDED
    with session_scope(engine) as session:  # remediation (another issue) finishes it
        stored = session.exec(select(ImportSet)).one()
        stored.remediation_status = "done"
        session.add(stored)
    assert handle(_succeeded("evt_a", 100, "file_1")) is OutcomeStatus.UNCHANGED
    assert handle(_succeeded("evt_old", 50, None)) is OutcomeStatus.UNCHANGED
    assert (row().errors_file_id, row().remediation_status) == ("file_1", "done")
    assert handle(_succeeded("evt_b", 200, "file_2")) is OutcomeStatus.RECORDED
    assert (row().errors_file_id, row().remediation_status) == ("file_2", "pending")
    assert row().last_event_id == "evt_b"
    engine.dispose()
